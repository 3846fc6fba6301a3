package relay

import (
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// benchRelay is a relay with n sessions registered and no NATS: deliver is
// driven directly, so the benchmark measures the dispatcher alone.
func benchRelay(b *testing.B, users, perUser int) (*Relay, []*session) {
	b.Helper()
	r := &Relay{cfg: Config{SubjectPrefix: "sse", QueueEvents: 1 << 20, QueueBytes: 1 << 30},
		log: testLogger(b), metrics: newMetrics()}
	r.cfg.Logger = r.log
	r.hub = newHub(&r.cfg, r.metrics)
	var all []*session
	for u := range users {
		for range perUser {
			s := &session{r: r, connID: "c" + strconv.Itoa(len(all)), keys: []string{"app.u" + strconv.Itoa(u)}}
			r.hub.register(s)
			all = append(all, s)
		}
	}
	return r, all
}

// benchMeta is the metadata of the messages of a benchmark, whose
// metrics dispatch records as it does for every message: the latency
// grows through the run, the slow end of the histogram's bucket search.
func benchMeta() jetstream.MsgMetadata { return jetstream.MsgMetadata{Timestamp: time.Now()} }

// drain empties the queues as a writer would, keeping the slices.
func drain(all []*session) {
	for _, s := range all {
		s.mu.Lock()
		clear(s.queue)
		s.queue, s.queueBytes = s.queue[:0], 0
		s.mu.Unlock()
		s.kicked.Store(false)
	}
}

// BenchmarkDispatchBroadcast delivers each event to every session of one
// feed. allocs/op is per event: one frame and its encoding, whatever the
// number of recipients.
func BenchmarkDispatchBroadcast(b *testing.B) {
	data := []byte(`{"type":"refresh","ts":1732550000000000000}`)
	for _, n := range []int{1, 100, 5000} {
		b.Run(fmt.Sprintf("sessions=%d", n), func(b *testing.B) {
			r, all := benchRelay(b, 1, n)
			b.ReportAllocs()
			seq := uint64(0)
			meta := benchMeta()
			for b.Loop() {
				seq++
				r.hub.deliver(seq, "sse.app.u0", "refresh", "", "", data)
				meta.Sequence.Stream = seq
				r.metrics.consumed(&meta)
				if seq%64 == 0 {
					b.StopTimer()
					drain(all)
					b.StartTimer()
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/delivery")
		})
	}
}

// BenchmarkDispatchPerUser delivers each event to the one session of its
// user among many (the per-user fan-out of the load targets).
func BenchmarkDispatchPerUser(b *testing.B) {
	const users = 5000
	r, all := benchRelay(b, users, 1)
	subjects := make([]string, users)
	for i := range subjects {
		subjects[i] = "sse.app.u" + strconv.Itoa(i) + ".orders"
	}
	data := []byte(`{"order":12345,"status":"shipped"}`)
	b.ReportAllocs()
	seq := uint64(0)
	meta := benchMeta()
	for b.Loop() {
		seq++
		r.hub.deliver(seq, subjects[seq%users], "", "", "", data)
		meta.Sequence.Stream = seq
		r.metrics.consumed(&meta)
		if seq%4096 == 0 {
			b.StopTimer()
			drain(all)
			b.StartTimer()
		}
	}
}
