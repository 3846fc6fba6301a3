package bench

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sserelay/sserelay/embedded"
	"github.com/sserelay/sserelay/relay"
	"github.com/sserelay/sserelay/relay/auth"
)

var testSecret = []byte("bench-test-secret-0123456789abcdef")

// relayOptions change the test relay.
type relayOptions struct {
	keepalive time.Duration                       // the relay's (0: its default)
	onConn    func(c net.Conn, st http.ConnState) // the HTTP server's ConnState hook
}

// testRelay starts embedded NATS (with a loopback listener for the bench's
// publisher), a relay and an HTTP server on 127.0.0.1, all in this process.
func testRelay(t *testing.T) (httpURL, natsURL string) {
	t.Helper()
	return testRelayWith(t, relayOptions{})
}

func testRelayWith(t *testing.T, o relayOptions) (httpURL, natsURL string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ns, err := embedded.Start(ctx, embedded.Options{StoreDir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	nc, err := nats.Connect("", ns.ConnectOption())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := relay.EnsureStream(ctx, js, relay.StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	v, err := auth.NewVerifier(ctx, auth.Config{Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("BENCH_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}
	r, err := relay.New(relay.Config{Conn: nc, Verifier: v, Logger: log, Keepalive: o.keepalive})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: r.Handler(), ReadHeaderTimeout: 5 * time.Second, ConnState: o.onConn}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		r.Drain()
		_ = srv.Shutdown(ctx)
		_ = r.Shutdown(ctx)
	})
	return "http://" + ln.Addr().String(), ns.ClientURL()
}

func runOK(t *testing.T, cfg Config) *Report {
	t.Helper()
	cfg.Secret = testSecret
	cfg.Logf = t.Logf
	cfg.RelayPID = os.Getpid() // the relay runs in this process
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rep, err := Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var sb strings.Builder
	_ = rep.WriteText(&sb)
	t.Log("\n" + sb.String())
	if !rep.OK {
		t.Fatalf("run failed: %v", rep.Failures)
	}
	return rep
}

func wantCounts(t *testing.T, what string, got tally, received int64) {
	t.Helper()
	want := tally{Expected: received, Received: received}
	if got != want {
		t.Errorf("%s: counts %+v, want %+v", what, got, want)
	}
}

func TestPerUserNATS(t *testing.T) {
	url, natsURL := testRelay(t)
	rep := runOK(t, Config{URL: url, NATSURL: natsURL, Streams: 20, Events: 200, Rate: 2000, Idle: -1})
	if rep.Connect.Connected != 20 || rep.Connect.Failed != 0 {
		t.Errorf("connect: %+v", rep.Connect)
	}
	if rep.Publish.Acked != 200 || rep.Publish.Errors != 0 {
		t.Errorf("publish: %+v", rep.Publish)
	}
	d := rep.Delivery
	wantCounts(t, "delivery", d.Counts, 200)
	if !d.Settled || d.Dropped != 0 || d.Streams != 20 || d.Latency.Count != 200 {
		t.Errorf("delivery: %+v", d)
	}
	if !d.RelayCounts.OK || d.RelayCounts.Delivered != 200 {
		t.Errorf("relay metrics: %+v", d.RelayCounts)
	}
	if rep.Relay.RSSIdleKiB == 0 || rep.Relay.PublishCPU == nil || !rep.Relay.PublishCPU.RelayKnown {
		t.Errorf("relay process figures missing: %+v", rep.Relay)
	}
}

func TestBroadcastHTTP(t *testing.T) {
	url, _ := testRelay(t)
	rep := runOK(t, Config{URL: url, Mode: modeBroadcast, Streams: 20, Events: 200, Publisher: publisherHTTP, Publishers: 4, Idle: -1})
	if rep.Publish.Acked != 200 || rep.Publish.Errors != 0 {
		t.Errorf("publish: %+v", rep.Publish)
	}
	// Four concurrent publishers to one feed: the relay's order is the
	// stream's, whatever the order of the requests.
	wantCounts(t, "delivery", rep.Delivery.Counts, 20*200)
	if rep.Delivery.Latency.Count != 20*200 {
		t.Errorf("latency samples: %d", rep.Delivery.Latency.Count)
	}
}

func TestResume(t *testing.T) {
	url, natsURL := testRelay(t)
	rep := runOK(t, Config{URL: url, NATSURL: natsURL, Streams: 20, Events: 200, Rate: 1000, Idle: -1,
		ResumeMissed: 2000, ResumeStorm: 10, StormMissed: 30})
	wantCounts(t, "delivery", rep.Delivery.Counts, 200)
	rs := rep.Resume
	if !rs.Completed || rs.Acked != 2000 || rs.EventsPerSecond <= 0 {
		t.Errorf("resume: %+v", rs)
	}
	wantCounts(t, "resume", rs.Counts, 2000)
	st := rep.Storm
	if st.Completed != 10 || st.Failed != 0 || st.Acked != 300 || !st.DuringMain || st.CatchUp.Count != 10 {
		t.Errorf("storm: %+v", st)
	}
	wantCounts(t, "storm", st.Counts, 300)
	// Every stream of the run is in the verdict: 20 main, 10 storm, 1 resume.
	if c := rep.Checked; c.Streams != 31 || c.Counts != (tally{Expected: 2500, Received: 2500}) {
		t.Errorf("checked: %+v", c)
	}
}

func TestStormShared(t *testing.T) {
	url, natsURL := testRelay(t)
	// No main phase: the storm runs alone.
	rep := runOK(t, Config{URL: url, NATSURL: natsURL, ResumeStorm: 10, StormMissed: 30, StormShared: true, Idle: -1})
	st := rep.Storm
	if !st.Shared || st.Completed != 10 || st.Acked != 30 || st.DuringMain || st.CatchUp.Count != 10 {
		t.Errorf("storm: %+v", st)
	}
	wantCounts(t, "storm", st.Counts, 10*30)
	if rep.Delivery != nil || rep.Publish != nil {
		t.Errorf("no main phase expected: %+v %+v", rep.Delivery, rep.Publish)
	}
}

// TestCheck checks the checker itself: a stream that misses, repeats
// and reorders events is reported as such.
func TestCheck(t *testing.T) {
	s := &stream{base: 100, got: []uint32{1, 2, 2, 5, 4, 7}}
	c := check(s, []uint64{90, 101, 102, 103, 104, 105, 106})
	want := tally{Expected: 6, Received: 6, Missing: 2, Duplicate: 1, OutOfOrder: 1, Unexpected: 1}
	if c != want {
		t.Errorf("check = %+v, want %+v", c, want)
	}
}

// TestSettleIgnoresUnacknowledged: deliveries of events whose publish
// failed (stored anyway) do not end the wait for acknowledged ones. As many
// events as were acknowledged arrived, but not the last acknowledged one:
// the stream is still behind. The anomaly of issue 11 came from counting.
func TestSettleIgnoresUnacknowledged(t *testing.T) {
	r := &runner{feeds: []feed{{seqs: []uint64{101, 102, 104}}}}
	s := &stream{base: 100, connected: true}
	for _, seq := range []uint64{101, 102, 103} { // 103: a publish answered with an error
		s.evID = seq
		s.record(0)
	}
	s.n.Store(3)
	if behind, got := r.behind([]*stream{s}); behind != 1 || got != 3 {
		t.Fatalf("behind %d, got %d: want the stream behind, with 3 events received", behind, got)
	}
	s.evID = 104
	s.record(0)
	if behind, _ := r.behind([]*stream{s}); behind != 0 {
		t.Fatalf("behind %d after the last acknowledged event", behind)
	}
	// A stream that connected after the last acknowledged event waits for nothing.
	late := &stream{base: 104, connected: true}
	if behind, _ := r.behind([]*stream{late}); behind != 0 {
		t.Fatalf("a stream positioned after every event is behind")
	}
}

func TestParser(t *testing.T) {
	// Chunks that split lines and events anywhere, as a real server may.
	body := "retry: 2000\n\nid: 7\nevent: sserelay.connected\ndata: {}\n\n" +
		": keepalive\n\nid: 8\ndata: {\"t\":1,\"n\":0}\n\nid: 9\nevent: x\ndata: {\"t\":2,\"n\":1}\n\n"
	for _, step := range []int{1, 2, 3, 7, 64, len(body)} {
		var raw strings.Builder
		for i := 0; i < len(body); i += step {
			part := body[i:min(i+step, len(body))]
			raw.WriteString(strings.ToUpper(strconvHex(len(part))) + "\r\n" + part + "\r\n")
		}
		raw.WriteString("0\r\n\r\n")
		connected := false
		s := &stream{buf: make([]byte, 16), cstate: csSize, onConnect: func(*stream, error) { connected = true }}
		in := raw.String()
		for len(in) > 0 {
			if s.rEnd == len(s.buf) {
				s.grow()
			}
			n := copy(s.buf[s.rEnd:], in)
			in = in[n:]
			s.rEnd += n
			s.consume(100)
		}
		if !connected || s.base != 7 || len(s.got) != 2 || s.got[0] != 1 || s.got[1] != 2 || s.cstate != csEnd {
			t.Errorf("step %d: connected %v base %d got %v state %d", step, connected, s.base, s.got, s.cstate)
		}
	}
}

func strconvHex(n int) string {
	const digits = "0123456789abcdef"
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n >>= 4 {
		b = append([]byte{digits[n&15]}, b...)
	}
	return string(b)
}

func TestHistogram(t *testing.T) {
	h := newHist()
	for i := 1; i <= 10000; i++ {
		h.record(i, int64(i)*int64(time.Microsecond))
	}
	s := h.summary()
	near := func(got, want float64) bool { return got > want*0.98 && got < want*1.02 }
	if s.Count != 10000 || !near(s.P50Ms, 5) || !near(s.P99Ms, 9.9) || !near(s.P999Ms, 9.99) || s.MaxMs != 10 {
		t.Errorf("summary %+v", s)
	}
	for _, v := range []int64{0, 1, 127, 128, 129, 255, 256, 1 << 20, 1<<40 - 1, 1 << 40, 1 << 62} {
		b := bucketOf(v)
		if b < 0 || b >= numBuckets {
			t.Fatalf("bucketOf(%d) = %d", v, b)
		}
		if v < 1<<40 {
			if m := bucketMid(b); float64(m) < float64(v)*0.98 || float64(m) > float64(v)*1.02+1 {
				t.Errorf("bucketMid(bucketOf(%d)) = %d", v, m)
			}
		}
	}
}
