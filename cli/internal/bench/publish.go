package bench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A plan says what to publish: events round-robin over feeds (so event i
// goes to feeds[i%len] with per-feed counter i/len), at rate events/s (0: as
// fast as the publisher goes), until events are sent (events > 0) or for
// duration.
type plan struct {
	feeds    []int
	rate     float64
	duration time.Duration
	events   int
}

// An ackRec is one acknowledged publish: the feed and the stream sequence.
type ackRec struct {
	feed int32
	seq  uint64
}

// pubResult is what a publish phase did.
type pubResult struct {
	start, end time.Time // first send, last acknowledgement
	sent       atomic.Int64
	acked      atomic.Int64
	ackLat     *hist // publish to acknowledgement

	mu     sync.Mutex
	acks   []ackRec
	errors int
	kinds  map[string]int
}

func (p *pubResult) addErr(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.errors++
	if p.kinds == nil {
		p.kinds = make(map[string]int)
	}
	msg := err.Error()
	if len(p.kinds) < 8 || p.kinds[msg] > 0 {
		p.kinds[msg]++
	}
}

func (p *pubResult) errorKinds() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for k, n := range p.kinds {
		out = append(out, fmt.Sprintf("%d× %s", n, k))
	}
	return out
}

// appendPayload appends the event data: the send time in unix nanoseconds
// first (the streams parse it at a fixed offset), the per-feed counter, and
// padding up to size bytes.
func appendPayload(dst []byte, t int64, n int, size int) []byte {
	start := len(dst)
	dst = append(dst, `{"t":`...)
	dst = strconv.AppendInt(dst, t, 10)
	dst = append(dst, `,"n":`...)
	dst = strconv.AppendInt(dst, int64(n), 10)
	if pad := size - (len(dst) - start) - len(`,"p":""}`); pad > 0 {
		dst = append(dst, `,"p":"`...)
		for range pad {
			dst = append(dst, 'x')
		}
		dst = append(dst, '"')
	}
	return append(dst, '}')
}

// pacer spaces events at a rate. next blocks until event i is due and
// reports false when the plan is done. Events due within a millisecond go
// out at once: sleeping per event would cost more than it measures.
type pacer struct {
	p     plan
	start time.Time
}

func (pc *pacer) next(ctx context.Context, i int) bool {
	if pc.p.events > 0 && i >= pc.p.events {
		return false
	}
	if pc.p.rate <= 0 {
		if pc.p.events == 0 && i%64 == 0 && time.Since(pc.start) >= pc.p.duration {
			return false
		}
		return i%256 != 0 || ctx.Err() == nil
	}
	due := time.Duration(float64(i) / pc.p.rate * float64(time.Second))
	if pc.p.events == 0 && due >= pc.p.duration {
		return false
	}
	if wait := due - time.Since(pc.start); wait > time.Millisecond {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return false
		}
	}
	return ctx.Err() == nil
}

// publishNATS publishes through JetStream from one goroutine with up to
// MaxInflight asynchronous publishes awaiting their acknowledgement; a
// second goroutine collects the acknowledgements in order.
func (r *runner) publishNATS(ctx context.Context, p plan) *pubResult {
	res := &pubResult{ackLat: newHist(), acks: make([]ackRec, 0, r.expectEvents(p))}
	type pending struct {
		f    jetstream.PubAckFuture
		feed int32
		t    int64
	}
	ch := make(chan pending, max(1, r.cfg.MaxInflight-2))
	done := make(chan struct{})
	var lastAck atomic.Int64
	go func() {
		defer close(done)
		for pd := range ch {
			select {
			case a := <-pd.f.Ok():
				now := time.Now().UnixNano()
				res.acks = append(res.acks, ackRec{feed: pd.feed, seq: a.Sequence})
				res.acked.Add(1)
				res.ackLat.record(0, now-pd.t)
				lastAck.Store(now)
			case err := <-pd.f.Err():
				res.addErr(err)
			}
		}
	}()
	pc := &pacer{p: p, start: time.Now()}
	res.start = pc.start
	for i := 0; pc.next(ctx, i); i++ {
		fi := p.feeds[i%len(p.feeds)]
		t := time.Now().UnixNano()
		m := &nats.Msg{Subject: r.feeds[fi].subject, Data: appendPayload(make([]byte, 0, 48+r.cfg.PayloadBytes), t, i/len(p.feeds), r.cfg.PayloadBytes)}
		f, err := r.js.PublishMsgAsync(m)
		if err != nil {
			res.addErr(err)
			if ctx.Err() != nil {
				break
			}
			continue
		}
		res.sent.Add(1)
		ch <- pending{f: f, feed: int32(fi), t: t}
	}
	close(ch)
	select {
	case <-done:
	case <-ctx.Done():
	case <-time.After(30 * time.Second):
		res.addErr(errors.New("acknowledgements still missing after 30 s"))
	}
	res.end = time.Unix(0, lastAck.Load())
	return res
}

// publishHTTP publishes with POST /v1/publish from Publishers goroutines,
// each on its own keep-alive connection, one request at a time.
func (r *runner) publishHTTP(ctx context.Context, p plan) *pubResult {
	res := &pubResult{ackLat: newHist()}
	pc := &pacer{p: p, start: time.Now()}
	res.start = pc.start
	var next atomic.Int64
	var lastAck atomic.Int64
	var wg sync.WaitGroup
	for w := range r.cfg.Publishers {
		wg.Go(func() {
			c := &httpClient{addr: r.addr, host: r.host, auth: "Bearer " + r.pubToken}
			defer c.close()
			var acks []ackRec
			var body []byte
			for {
				i := int(next.Add(1) - 1)
				if !pc.next(ctx, i) {
					break
				}
				fi := p.feeds[i%len(p.feeds)]
				t := time.Now().UnixNano()
				body = append(body[:0], `{"app_id":"`...)
				body = append(body, r.cfg.App...)
				body = append(body, `","feed":"`...)
				body = append(body, r.feeds[fi].name...)
				body = append(body, `","data":`...)
				body = appendPayload(body, t, i/len(p.feeds), r.cfg.PayloadBytes)
				body = append(body, '}')
				res.sent.Add(1)
				seq, err := c.publish(body)
				if err != nil {
					res.addErr(err)
					if ctx.Err() != nil {
						break
					}
					continue
				}
				now := time.Now().UnixNano()
				acks = append(acks, ackRec{feed: int32(fi), seq: seq})
				res.acked.Add(1)
				res.ackLat.record(w, now-t)
				lastAck.Store(now)
			}
			res.mu.Lock()
			res.acks = append(res.acks, acks...)
			res.mu.Unlock()
		})
	}
	wg.Wait()
	res.end = time.Unix(0, lastAck.Load())
	return res
}

// natsConnect connects the publisher and its JetStream context.
func (r *runner) natsConnect() error {
	nc, err := nats.Connect(r.cfg.NATSURL, nats.Name("sserelay bench"), nats.MaxReconnects(-1),
		nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		return fmt.Errorf("connect to NATS %s: %w", r.cfg.NATSURL, err)
	}
	js, err := jetstream.New(nc,
		// The bench bounds what is in flight itself (its channel plus the
		// future being awaited and the one being sent); nats.go's own bound
		// must stay above, or it stalls and fails publishes.
		jetstream.WithPublishAsyncMaxPending(2*r.cfg.MaxInflight+16),
		jetstream.WithPublishAsyncTimeout(20*time.Second))
	if err != nil {
		nc.Close()
		return err
	}
	r.nc, r.js = nc, js
	return nil
}

// publish runs a plan with the configured publisher.
func (r *runner) publish(ctx context.Context, p plan) *pubResult {
	if r.cfg.Publisher == publisherHTTP {
		return r.publishHTTP(ctx, p)
	}
	return r.publishNATS(ctx, p)
}

func (r *runner) expectEvents(p plan) int {
	if p.events > 0 {
		return p.events
	}
	if p.rate > 0 {
		return min(int(p.rate*p.duration.Seconds())+16, 1<<24)
	}
	return 1 << 16
}

func oneLine(s string) string { return strings.ReplaceAll(s, "\n", " ") }
