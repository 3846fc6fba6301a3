package relay

import (
	"runtime"
	"strconv"
	"testing"
	"time"
)

// BenchmarkRingGC measures what a full ring costs the garbage collector:
// one forced collection per op, over a ring of the default size filled like
// per-user fan-out fills it (5,000 feeds, the subject, headers and payload
// of each event allocated apart by the NATS client, as they arrive). The
// mark phase of every collection walks the ring, so its cost is paid once
// per GC cycle while the relay runs; at 20,000 events/s that is a cycle
// every few seconds.
func BenchmarkRingGC(b *testing.B) {
	cfg := DefaultConfig()
	g := newRing(cfg.RingEvents, cfg.RingBytes)
	for seq := uint64(1); seq <= uint64(cfg.RingEvents); seq++ {
		subj := "sse.bench.user" + strconv.Itoa(int(seq%5000)) + ".t"
		data := []byte(`{"seq":` + strconv.Itoa(int(seq)) + `,"pad":"xxxxxxxxxxxxxxxx"}`)
		g.push(ringEntry{seq: seq, key: subj[4 : len(subj)-2], topic: subj[len(subj)-1:], event: string([]byte("update")), data: data})
	}
	runtime.GC()
	b.ResetTimer()
	var total time.Duration
	for b.Loop() {
		start := time.Now()
		runtime.GC()
		total += time.Since(start)
	}
	b.ReportMetric(float64(total.Microseconds())/float64(b.N), "us/gc")
	runtime.KeepAlive(g)
}
