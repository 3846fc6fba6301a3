package relay

import (
	"bufio"
	"bytes"
	"runtime"
	"strconv"
	"strings"
	"syscall"
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
// events/s counts the user's events; cpu-ns/event the CPU time of the
// whole process (less sensitive than events/s to other load on the machine); allocs/event counts every allocation
// of the process during the loop (relay, embedded NATS server and the test
// client, whose reader allocates nothing per event) per event delivered.
func BenchmarkResume1k(b *testing.B)   { benchResume(b, 1_000) }
func BenchmarkResume100k(b *testing.B) { benchResume(b, 100_000) }

func benchResume(b *testing.B, n int) {
	b.Run("store", func(b *testing.B) { benchResumeFrom(b, n, false, 0) })
	b.Run("store-direct", func(b *testing.B) { benchResumeFrom(b, n, false, -1) })
	b.Run("ring", func(b *testing.B) { benchResumeFrom(b, n, true, 0) })
}

func benchResumeFrom(b *testing.B, n int, ring bool, consumerMin int) {
	pad := strings.Repeat("x", 100)
	gen := func(i int) *nats.Msg {
		if i%2 == 0 {
			return msg("sse.demo.alice", "a"+strconv.Itoa(i)+" "+pad)
		}
		return msg("sse.demo.u"+strconv.Itoa(i%1000)+".t", "o"+strconv.Itoa(i)+" "+pad)
	}
	var seqs []uint64
	opts := []envOption{withConfig(func(c *Config) {
		c.WriteTimeout = time.Minute
		c.ReplayConsumerMin = consumerMin
		c.UserStreamRate = -1 // one stream per iteration: -benchtime=20x would pass the burst
		if ring {
			c.RingEvents = 4 * n
			c.RingBytes = 1 << 30
		}
	})}
	if !ring {
		opts = append(opts, withHistory(func(e *testEnv) { seqs = e.publishFast(b, 2*n, gen) }))
	}
	e := newEnv(b, opts...)
	if ring {
		seqs = e.publishFast(b, 2*n, gen)
		e.waitCursor(seqs[len(seqs)-1])
	}
	last := seqs[len(seqs)-2] // alice's last event
	h := bearer(token(b, "alice"))
	h.Set("Last-Event-ID", "0")

	resume := func() int {
		resp, conn := dialStream(b, e, "app_id=demo", h, 0)
		defer conn.Close()
		_ = conn.SetReadDeadline(time.Now().Add(5 * time.Minute)) // a hang guard
		got := 0
		err := scanEvents(bufio.NewReaderSize(resp.Body, 1024), func(id uint64, event, _ []byte) bool {
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
	cpu0 := processCPU(b)
	start := time.Now()
	for b.Loop() {
		events += resume()
	}
	elapsed := time.Since(start)
	b.ReportMetric(float64(processCPU(b)-cpu0)/float64(events), "cpu-ns/event")
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(events)/elapsed.Seconds(), "events/s")
	b.ReportMetric(float64(after.Mallocs-before.Mallocs)/float64(events), "allocs/event")
	b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/float64(events), "B/event")
	var m float64
	for _, c := range e.relay.metrics.replayed {
		m += testutil.ToFloat64(c)
	}
	if m == 0 {
		b.Fatal("no event was replayed")
	}
	b.ReportMetric(testutil.ToFloat64(e.relay.metrics.consumerFallbacks), "fallbacks")
	b.ReportMetric(testutil.ToFloat64(e.relay.metrics.replayed[sourceConsumer])/m, "consumer-share")
}

// scanEvents reads the relay's events from br with no allocation per
// event, so that allocs/event counts the relay's: it calls f with each
// event's id, event name and data (valid only during the call) until f
// returns true. It reads only what the relay writes (LF line ends, "id: ",
// "event: " and "data: " with one space); the tests read streams with the
// spec decoder instead (sseStream).
func scanEvents(br *bufio.Reader, f func(id uint64, event, data []byte) bool) error {
	var id uint64
	var event, data []byte
	hasData := false
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		line = line[:len(line)-1]
		switch {
		case len(line) == 0:
			if hasData && f(id, event, data) {
				return nil
			}
			event, data, hasData = event[:0], data[:0], false
		case line[0] == ':':
		case bytes.HasPrefix(line, []byte("id: ")):
			id = 0
			for _, c := range line[4:] {
				id = id*10 + uint64(c-'0')
			}
		case bytes.HasPrefix(line, []byte("event: ")):
			event = append(event[:0], line[7:]...)
		case bytes.HasPrefix(line, []byte("data: ")):
			if hasData {
				data = append(data, '\n')
			}
			data = append(data, line[6:]...)
			hasData = true
		}
	}
}

// processCPU returns the CPU time (user and system) the process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
