package bench

import (
	"context"
	"fmt"
	"net/netip"
	"strconv"
	"time"
)

// The streams' connections: where they come from, how many files they
// need, how they are opened and closed.

// sourceAddrs returns the loopback addresses the streams connect from (none:
// the kernel's choice) for a relay on host: n of them, or with n 0 enough for
// conns connections.
func sourceAddrs(host string, n, conns int) ([]netip.Addr, error) {
	ip, err := netip.ParseAddr(host)
	if host == "localhost" {
		ip, err = netip.MustParseAddr("127.0.0.1"), nil
	}
	loop := err == nil && ip.Unmap().Is4() && ip.IsLoopback()
	if n == 0 {
		if !loop {
			return nil, nil
		}
		n = min(maxSourceAddrs, (conns+connsPerSourceAddr-1)/connsPerSourceAddr)
	}
	if n <= 1 {
		return nil, nil
	}
	if !loop {
		return nil, fmt.Errorf("%w: %d source addresses need a relay on 127.0.0.0/8, not %s", errInvalidConfig, n, host)
	}
	addrs := make([]netip.Addr, n)
	for i := range addrs {
		addrs[i] = netip.AddrFrom4([4]byte{127, 0, 0, byte(1 + i)})
	}
	return addrs, nil
}

// checkFileLimits fails early when this process or the relay cannot open a
// file per connection: the run would only count connect errors.
func (r *runner) checkFileLimits(rep *Report) error {
	need := uint64(r.cfg.connections() + 64)
	if have := rep.Machine.OpenFiles; have > 0 && have < need {
		return fmt.Errorf("the load tool's open files limit is %d, this run needs about %d: raise it (ulimit -n; it is raised to the hard limit at start)", have, need)
	}
	if s := rep.Relay.OpenFilesLimit; s != "" && s != "unlimited" {
		if have, err := strconv.ParseUint(s, 10, 64); err == nil && have < need {
			return fmt.Errorf("the relay's open files limit is %d, this run needs about %d: raise it where the relay starts (ulimit -n)", have, need)
		}
	}
	return nil
}

// connect opens streams at rate per second, at most ConnectConcurrency at a
// time, and waits until each is connected or failed.
func (r *runner) connect(ctx context.Context, streams []*stream, rate float64, bufSize int) *connectReport {
	cr := &connectReport{Requested: len(streams)}
	lat := newHist()
	results := make(chan error, len(streams))
	sem := make(chan struct{}, r.cfg.ConnectConcurrency)
	onConnect := func(s *stream, err error) {
		if err == nil {
			lat.record(s.idx, time.Since(s.start).Nanoseconds())
		}
		results <- err
		<-sem
	}
	errs := make(map[string]int)
	start := time.Now()
	launched := 0
launch:
	for i, s := range streams {
		if rate > 0 {
			due := time.Duration(float64(i) / rate * float64(time.Second))
			if wait := due - time.Since(start); wait > time.Millisecond {
				sleep(ctx, wait)
			}
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			break launch
		}
		tok, err := r.streamToken(s)
		if err != nil {
			<-sem
			results <- err
			launched++
			continue
		}
		s.token = tok
		s.onConnect = onConnect
		r.launch(ctx, s, bufSize)
		launched++
	}
	for range launched {
		if err := <-results; err != nil {
			cr.Failed++
			errs[oneLine(err.Error())]++
		} else {
			cr.Connected++
		}
	}
	cr.Failed += len(streams) - launched
	cr.Seconds = time.Since(start).Seconds()
	if cr.Seconds > 0 {
		cr.PerSecond = float64(cr.Connected) / cr.Seconds
	}
	cr.Latency = lat.summary()
	cr.Errors = kinds(errs)
	return cr
}

func (r *runner) launch(ctx context.Context, s *stream, bufSize int) {
	r.mu.Lock()
	r.all = append(r.all, s)
	r.mu.Unlock()
	d := &r.dialers[s.idx%len(r.dialers)]
	r.wg.Go(func() { s.serve(ctx, d, r.addr, r.host, bufSize, r.cfg.ConnectTimeout) })
}

// closeAll closes every stream and waits for their goroutines.
func (r *runner) closeAll() {
	r.mu.Lock()
	all := r.all
	r.all = nil
	r.mu.Unlock()
	for _, s := range all {
		s.close()
	}
	r.wg.Wait()
}
