package relay

import (
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// BenchmarkResume1k and BenchmarkResume100k: one user's 1,000 / 100,000
// missed events among as many events of 1,000 other users. Each iteration
// opens a stream with Last-Event-ID 0 and reads until the last id.
//
//   - store: the events were stored before the relay started (a client that
//     fails over to another instance): every resume reads the store.
//   - ring: the relay dispatched the events and holds them in memory.
//
// events/s counts the user's events; allocs/event counts every allocation
// of the process during the loop (relay, embedded NATS server and the test
// client, whose reader allocates nothing per event) per event delivered.
func BenchmarkResume1k(b *testing.B)   { benchResume(b, 1_000) }
func BenchmarkResume100k(b *testing.B) { benchResume(b, 100_000) }

func benchResume(b *testing.B, n int) {
	b.Run("store", func(b *testing.B) { benchResumeFrom(b, n, false) })
	b.Run("ring", func(b *testing.B) { benchResumeFrom(b, n, true) })
}

func benchResumeFrom(b *testing.B, n int, ring bool) {
	pad := strings.Repeat("x", 100)
	gen := func(i int) *nats.Msg {
		if i%2 == 0 {
			return rsMsg("sse.demo.alice", "a"+strconv.Itoa(i)+" "+pad)
		}
		return rsMsg("sse.demo.u"+strconv.Itoa(i%1000)+".t", "o"+strconv.Itoa(i)+" "+pad)
	}
	var seqs []uint64
	o := rsEnvOptions{config: func(c *Config) {
		c.WriteTimeout = time.Minute
		if ring {
			c.RingEvents = 4 * n
			c.RingBytes = 1 << 30
		}
	}}
	if !ring {
		o.history = func(e *testEnv) { seqs = rsPublishFast(b, e, 2*n, gen) }
	}
	e := newRsEnv(b, o)
	if ring {
		seqs = rsPublishFast(b, e.testEnv, 2*n, gen)
		e.waitCursor(seqs[len(seqs)-1])
	}
	last := seqs[len(seqs)-2] // alice's last event
	h := bearer(token(b, "alice"))
	h.Set("Last-Event-ID", "0")

	resume := func() int {
		s := rsOpenRaw(b, e.testEnv, "app_id=demo", h, 0)
		defer s.Close()
		got := 0
		err := rsScan(s, 5*time.Minute, func(id uint64, event, _ []byte) bool {
			if len(event) == 0 { // not sserelay.connected
				got++
			}
			return id == last
		})
		if err != nil || got != n {
			b.Fatalf("read %d of %d events: %v", got, n, err)
		}
		return got
	}
	resume() // warm up: connections, store caches, pools

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	b.ReportAllocs()
	events := 0
	start := time.Now()
	for b.Loop() {
		events += resume()
	}
	elapsed := time.Since(start)
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(events)/elapsed.Seconds(), "events/s")
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/float64(events), "allocs/event")
	b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/float64(events), "B/event")
	if m := testutil.ToFloat64(e.relay.metrics.replayed[sourceRing]) + testutil.ToFloat64(e.relay.metrics.replayed[sourceStore]); m == 0 {
		b.Fatal("no event was replayed")
	}
}
