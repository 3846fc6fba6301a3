package bench

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"sync"
	"time"
)

// A stormRun is the state of --resume-storm: clients that connected once,
// left at their position, and missed events since.
type stormRun struct {
	first   []*stream // the first connections, to learn each position
	clients []*stream // the reconnections
	report  *stormReport
}

func (r *runner) userStream(idx int, user string) *stream {
	return &stream{idx: idx, user: user, feed: r.addFeed(user), query: "/v1/events?app_id=" + url.QueryEscape(r.cfg.App)}
}

// prepareStorm connects the storm's clients once, closes them, and
// publishes StormMissed events to each of their feeds.
func (r *runner) prepareStorm(ctx context.Context) (*stormRun, error) {
	m := r.cfg.ResumeStorm
	st := &stormRun{report: &stormReport{Clients: m, MissedEach: r.cfg.StormMissed, Shared: r.cfg.StormShared}}
	st.first = make([]*stream, m)
	shared := -1
	if r.cfg.StormShared {
		shared = r.addFeed("_storm_" + r.id)
	}
	for i := range m {
		user := r.id + "-s" + strconv.Itoa(i)
		if shared < 0 {
			st.first[i] = r.userStream(i, user)
			continue
		}
		st.first[i] = &stream{idx: i, user: user, feed: shared,
			query: "/v1/events?app_id=" + url.QueryEscape(r.cfg.App) + "&feed=" + url.QueryEscape(r.feeds[shared].name)}
	}
	r.logf("resume storm: connecting %d clients to learn their positions", m)
	cr := r.connect(ctx, st.first, r.cfg.ConnectRate, 4096)
	if cr.Connected == 0 {
		return nil, fmt.Errorf("resume storm: no client connected: %v", cr.Errors)
	}
	st.report.Errors = append(st.report.Errors, cr.Errors...)
	feeds := make([]int, 0, m)
	for _, s := range st.first {
		s.close()
		if s.connected && (shared < 0 || len(feeds) == 0) {
			feeds = append(feeds, s.feed)
		}
	}
	p := plan{feeds: feeds, events: len(feeds) * r.cfg.StormMissed}
	r.logf("resume storm: publishing %d events to %d feeds while the clients are away", p.events, len(feeds))
	res := r.publish(ctx, p)
	r.applyAcks(res)
	st.report.Acked = res.acked.Load()
	if res.errors > 0 {
		st.report.Errors = append(st.report.Errors, res.errorKinds()...)
	}
	return st, nil
}

// runStorm reconnects every storm client at once with its Last-Event-ID and
// waits until each has caught up; the main streams' latency is recorded in a
// second histogram meanwhile.
func (r *runner) runStorm(ctx context.Context, st *stormRun) {
	h := newHist()
	r.storm.Store(h)
	defer r.storm.Store(nil)
	type fin struct {
		s  *stream
		at int64
	}
	var mu sync.Mutex
	errs := make(map[string]int)
	finCh := make(chan fin, len(st.first))
	onConnect := func(s *stream, err error) {
		if err != nil {
			mu.Lock()
			errs[oneLine(err.Error())]++
			mu.Unlock()
		}
	}
	onTarget := func(s *stream, at int64) { finCh <- fin{s, at} }
	r.logf("resume storm: %d clients reconnect at once", len(st.first))
	c0 := sampleCPU(r.cfg.RelayPID)
	start := c0.at
	waiting := 0
	for _, f := range st.first {
		if !f.connected {
			continue
		}
		tok, err := r.streamToken(f)
		if err != nil {
			onConnect(f, err)
			continue
		}
		s := &stream{idx: f.idx, user: f.user, feed: f.feed, query: f.query, token: tok, resume: true, base: f.base,
			target: len(r.feeds[f.feed].seqs), onConnect: onConnect, onTarget: onTarget}
		st.clients = append(st.clients, s)
		if s.target == 0 {
			s.onTarget = nil
			st.report.Completed++
		} else {
			waiting++
		}
		r.launch(ctx, s, 16<<10)
	}
	var durations []time.Duration
	var lastAt int64
	timeout := time.NewTimer(60 * time.Second)
	defer timeout.Stop()
wait:
	for range waiting {
		select {
		case f := <-finCh:
			if f.at < 0 {
				st.report.Failed++
				continue
			}
			st.report.Completed++
			durations = append(durations, time.Unix(0, f.at).Sub(start))
			lastAt = max(lastAt, f.at)
		case <-timeout.C:
			onConnect(nil, errors.New("not caught up within 60 s"))
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	c1 := sampleCPU(r.cfg.RelayPID)
	if lastAt > 0 {
		st.report.AllCaughtUpSecs = time.Unix(0, lastAt).Sub(start).Seconds()
		c1.at = time.Unix(0, lastAt)
	}
	w := cpuBetween(c0, c1)
	st.report.CPU = &w
	st.report.CatchUp = durationSummary(durations)
	st.report.LiveDuring = h.summary()
	mu.Lock()
	st.report.Errors = append(st.report.Errors, kinds(errs)...)
	mu.Unlock()
	r.logf("resume storm: %d of %d caught up in %.3f s", st.report.Completed, len(st.first), st.report.AllCaughtUpSecs)
	r.after = append(r.after, func() {
		for _, s := range st.clients {
			st.report.Counts.add(check(s, r.feeds[s.feed].seqs))
			st.report.checked++
		}
	})
}

// resumeMissed is --resume-missed: a client leaves, K events are published
// to its feed, and it comes back with Last-Event-ID.
func (r *runner) resumeMissed(ctx context.Context) (*resumeReport, error) {
	k := r.cfg.ResumeMissed
	rr := &resumeReport{Missed: k}
	first := r.userStream(0, r.id+"-r0")
	cr := r.connect(ctx, []*stream{first}, 0, 4096)
	if cr.Connected == 0 {
		return nil, fmt.Errorf("resume: client did not connect: %v", cr.Errors)
	}
	first.close()
	r.logf("resume: publishing %d events to an absent client", k)
	res := r.publish(ctx, plan{feeds: []int{first.feed}, events: k})
	r.applyAcks(res)
	rr.Acked = res.acked.Load()
	if rr.Acked > 0 {
		rr.PublishSeconds = res.end.Sub(res.start).Seconds()
	}
	if res.errors > 0 {
		rr.Error = fmt.Sprintf("%d publish errors: %v", res.errors, res.errorKinds())
	}
	tok, err := r.token(first.user, nil, nil)
	if err != nil {
		return nil, err
	}
	done := make(chan int64, 1)
	connected := make(chan time.Duration, 1)
	s := &stream{idx: 1, user: first.user, feed: first.feed, query: first.query, token: tok, resume: true, base: first.base,
		target: len(r.feeds[first.feed].seqs)}
	s.onConnect = func(s *stream, err error) {
		if err == nil {
			connected <- time.Since(s.start)
		}
	}
	s.onTarget = func(_ *stream, at int64) { done <- at }
	c0 := sampleCPU(r.cfg.RelayPID)
	start := time.Now()
	r.launch(ctx, s, 256<<10)
	timeout := time.NewTimer(60*time.Second + time.Duration(k)*10*time.Microsecond)
	defer timeout.Stop()
	select {
	case at := <-done:
		if at < 0 {
			rr.Error = "stream ended before catching up"
			break
		}
		c1 := sampleCPU(r.cfg.RelayPID)
		c1.at = time.Unix(0, at)
		c0.at = start
		w := cpuBetween(c0, c1)
		rr.CPU = &w
		rr.Completed = true
		rr.CatchUpSeconds = time.Unix(0, at).Sub(start).Seconds()
		if rr.CatchUpSeconds > 0 {
			rr.EventsPerSecond = float64(s.target) / rr.CatchUpSeconds
		}
		if w.RelayKnown && s.target > 0 && w.Seconds >= minCPUWindow {
			rr.CPUPerEventUs = w.RelayCPU * 1e6 / float64(s.target)
		}
	case <-timeout.C:
		rr.Error = "not caught up before the timeout"
	case <-ctx.Done():
		rr.Error = ctx.Err().Error()
	}
	select {
	case d := <-connected:
		rr.ConnectMs = ms(int64(d))
	default:
	}
	r.logf("resume: %d events caught up in %.3f s (%.0f/s)", s.target, rr.CatchUpSeconds, rr.EventsPerSecond)
	r.after = append(r.after, func() {
		rr.Counts = check(s, r.feeds[s.feed].seqs)
		if s.err != nil && rr.Error == "" && !rr.Completed {
			rr.Error = s.err.Error()
		}
	})
	return rr, nil
}
