package relay

import (
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"

	"github.com/sserelay/sserelay/relay/sse"
)

// The metrics after a scripted workload, by value: deliveries, bytes, the
// latency histogram, replays by source, resets, publish status codes, the
// consumer lag going up and back to 0, and why the streams closed.
func TestMetricsByValue(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *Config) { c.MaxPublishBytes = 512 }))
	alice := token(t, "alice", claimPublish("demo"))
	s := e.scrape()
	if n, _ := s.histogram(t, "sserelay_dispatch_latency_seconds"); n != 0 {
		t.Fatalf("dispatch latency count %d before any event", n)
	}
	s.want(t, map[string]float64{
		"sserelay_open_streams": 0, "sserelay_events_delivered_total": 0, "sserelay_bytes_written_total": 0,
		"sserelay_consumer_lag": 0, `sserelay_replays_total{source="ring"}`: 0, `sserelay_replays_total{source="store"}`: 0,
		`sserelay_resets_total{reason="unknown-id"}`: 0, `sserelay_publish_requests_total{code="200"}`: 0,
	})

	// One stream, one event: the bytes are exactly the event's.
	all := e.open("app_id=demo", bearer(alice))
	all.Connected(t)
	// The head and the connected event are counted just after they are
	// written, so possibly after the client read them: wait until the count
	// holds still.
	before := -1.0
	eventually(t, waitLong, "the stream's first bytes counted", func() bool {
		prev := before
		time.Sleep(20 * time.Millisecond)
		before = e.scrape().value(t, "sserelay_bytes_written_total")
		return before > 0 && before == prev
	})
	first := e.publish("sse.demo.alice", "x")
	all.ExpectIDs(t, first)
	frame := float64(len(sse.AppendEvent(nil, first, "", []byte("x"))))
	eventually(t, waitLong, "bytes of one event counted", func() bool {
		return e.scrape().value(t, "sserelay_bytes_written_total") == before+frame
	})

	// Five events for two streams, one that cannot be written.
	topic := e.open("app_id=demo&topic=t", bearer(alice))
	topic.Connected(t)
	var seqs []uint64
	for i := range 5 {
		seqs = append(seqs, e.publish("sse.demo.alice.t", "t"+strconv.Itoa(i)))
	}
	bad := e.publish("sse.demo.alice.t", "bad", HeaderEvent, "sserelay.forged")
	all.ExpectIDs(t, seqs...)
	topic.ExpectIDs(t, seqs...)

	// Publishes over HTTP, one of each status.
	publish := func(tok, body string) int {
		hdr := http.Header{"Content-Type": {"application/json"}}
		if tok != "" {
			hdr.Set("Authorization", "Bearer "+tok)
		}
		return do(t, http.MethodPost, e.url+"/v1/publish", hdr, body).Status
	}
	for _, p := range []struct {
		tok, body string
		want      int
	}{
		{alice, `{"app_id":"demo","feed":"alice","topic":"u","data":"h1"}`, 200},
		{alice, `{"app_id":"demo","feed":"alice","topic":"u","data":"h2"}`, 200},
		{alice, `{"app_id":"demo"`, 400},
		{"", `{"app_id":"demo","feed":"alice","data":"x"}`, 401},
		{token(t, "bob"), `{"app_id":"demo","feed":"bob","data":"x"}`, 403},
		{alice, `{"app_id":"demo","feed":"alice","data":"` + strings.Repeat("x", 600) + `"}`, 413},
	} {
		if got := publish(p.tok, p.body); got != p.want {
			t.Fatalf("publish %.40s: %d, want %d", p.body, got, p.want)
		}
	}
	h1, h2 := bad+1, bad+2
	all.ExpectIDs(t, h1, h2)

	// A resume from the first event: served by the ring.
	resumed := e.open("app_id=demo&last_event_id="+strconv.FormatUint(first, 10), bearer(alice))
	resumed.Connected(t)
	resumed.ExpectIDs(t, append(seqs, h1, h2)...)
	// An id this stream never had: a reset.
	unknown := e.open("app_id=demo&last_event_id="+strconv.FormatUint(h2+1000, 10), bearer(alice))
	unknown.Connected(t)
	if ev := unknown.MustNext(t); ev.Event != EventReset {
		t.Fatalf("got %+v, want %s", ev, EventReset)
	}

	const delivered = 1 + 5 + 5 + 2 + 7 // all, topic, all's HTTP events, resumed
	eventually(t, waitLong, "deliveries counted", func() bool {
		return e.scrape().value(t, "sserelay_events_delivered_total") == delivered
	})
	s = e.scrape()
	s.want(t, map[string]float64{
		"sserelay_open_streams":            4,
		"sserelay_events_dispatched_total": 9, // first, 5, bad, h1, h2
		"sserelay_events_dropped_total":    1,
		"sserelay_cursor":                  float64(h2),
		"sserelay_consumer_lag":            0,
		"sserelay_replays_total":           1, `sserelay_replays_total{source="ring"}`: 1,
		`sserelay_events_replayed_total{source="ring"}`: 7, `sserelay_events_replayed_total{source="store"}`: 0,
		`sserelay_resets_total{reason="unknown-id"}`: 1, `sserelay_resets_total{reason="history-gone"}`: 0,
		`sserelay_publish_requests_total{code="200"}`: 2, `sserelay_publish_requests_total{code="400"}`: 1,
		`sserelay_publish_requests_total{code="401"}`: 1, `sserelay_publish_requests_total{code="403"}`: 1,
		`sserelay_publish_requests_total{code="413"}`: 1, `sserelay_publish_requests_total{code="503"}`: 0,
		"sserelay_published_total": 2,
	})
	if n, sum := s.histogram(t, "sserelay_dispatch_latency_seconds"); n != 9 || sum < 0 {
		t.Errorf("dispatch latency: %d observations (sum %v), want one per dispatched event: 9", n, sum)
	}
	if n, _ := s.histogram(t, `sserelay_replay_duration_seconds{source="ring"}`); n != 1 {
		t.Errorf("ring replay durations: %d, want 1", n)
	}
	if b := s.value(t, "sserelay_bytes_written_total"); b < before+frame*delivered {
		t.Errorf("bytes written %v: less than the events delivered", b)
	}

	// The dispatcher held up: the lag is what the stream has beyond the
	// cursor, as the readiness probe sees it; then back to 0.
	e.relay.hub.mu.Lock()
	var held []uint64
	for range 3 {
		held = append(held, e.publish("sse.demo.carol", "held"))
	}
	probe := do(t, http.MethodGet, e.url+"/readyz", nil, "")
	lagHeld := e.scrape().value(t, "sserelay_consumer_lag")
	e.relay.hub.mu.Unlock()
	if probe.Status != http.StatusOK || lagHeld != 3 {
		t.Errorf("dispatcher held: /readyz %d, lag %v, want 3", probe.Status, lagHeld)
	}
	e.waitCursor(held[2])
	if lag := e.scrape().value(t, "sserelay_consumer_lag"); lag != 0 {
		t.Errorf("lag %v after the dispatcher caught up", lag)
	}

	// One client leaves, the drain closes the other three.
	all.Close()
	eventually(t, waitLong, "client-gone counted", func() bool {
		return e.metric(`sserelay_streams_closed_total{reason="client-gone"}`) == 1
	})
	e.relay.Drain()
	eventually(t, waitLong, "all streams closed", func() bool { return e.metric("sserelay_open_streams") == 0 })
	e.scrape().want(t, map[string]float64{
		`sserelay_streams_closed_total{reason="client-gone"}`: 1, `sserelay_streams_closed_total{reason="draining"}`: 3,
		`sserelay_streams_closed_total{reason="write-error"}`: 0, "sserelay_streams_closed_total": 4,
		"sserelay_ready": 0,
	})
}

// The library has no global state: its metrics go to the registry it is
// given (alongside the embedding program's), and to nowhere else.
func TestMetricsRegistry(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	app := prometheus.NewCounter(prometheus.CounterOpts{Name: "app_things_total", Help: "The embedding program's own."})
	reg.MustRegister(app)
	app.Add(7)
	e := newEnv(t, withConfig(func(c *Config) { c.Registry = reg; c.NoMetrics = true }))

	if r := do(t, http.MethodGet, e.url+"/metrics", nil, ""); r.Status != http.StatusNotFound {
		t.Fatalf("GET /metrics with NoMetrics: %d", r.Status)
	}
	private := httpServe(t, e.relay.MetricsHandler())
	s := scrapeURL(t, private+"/metrics")
	s.want(t, map[string]float64{"app_things_total": 7, "sserelay_open_streams": 0})
	if _, ok := s["go_goroutines"]; ok {
		t.Error("the relay registered the Go collector itself: the program decides")
	}
	if _, ok := prometheusDefaultHas("sserelay_open_streams"); ok {
		t.Error("the relay registered into prometheus.DefaultRegisterer")
	}

	// One registry, one relay: a second is refused, clearly.
	_, err := New(Config{Conn: e.nc, Verifier: mustVerifier(t), Registry: reg, Logger: testLogger(t)})
	if err == nil || !strings.Contains(err.Error(), "one registry serves one relay") {
		t.Fatalf("second relay on one registry: %v", err)
	}
}

// httpServe serves h on a loopback port until the test ends and returns its URL.
func httpServe(t testing.TB, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return "http://" + ln.Addr().String()
}

func prometheusDefaultHas(name string) (*dto.MetricFamily, bool) {
	fams, _ := prometheus.DefaultGatherer.Gather()
	for _, f := range fams {
		if f.GetName() == name {
			return f, true
		}
	}
	return nil, false
}

// replacedTotal is the sum of sserelay_consumer_replaced_total.
func (m *metrics) replacedTotal() float64 {
	var n float64
	for _, r := range []string{recreateNoHeartbeat, recreateDeleted, recreateGap, recreateReconnect, recreateNoResponder} {
		n += testutil.ToFloat64(m.replaced.WithLabelValues(r))
	}
	return n
}
