package relay

// The test harness of package relay, in three files: the environment
// (this file: NATS, the relay, its HTTP server, waiting, the metric
// reader),
// harness_client_test.go (HTTP requests and the SSE client) and
// harness_publish_test.go (tokens and publishing). Tests are in files by
// behaviour and keep their own helpers; the one other shared environment is
// the NATS cluster of cluster_test.go.

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"

	"github.com/sserelay/sserelay/embedded"
	"github.com/sserelay/sserelay/relay/auth"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// Process-wide, started once by nats-server and the runtime.
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).handleSignals.func1"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}

var testSecret = []byte("relay-test-secret-0123456789abcdef")

// testEnv is a real embedded NATS server with the relay's stream, a relay and
// an HTTP server on a loopback socket.
type testEnv struct {
	t      testing.TB
	ns     *embedded.Server
	nc     *nats.Conn // the relay's connection
	pub    *nats.Conn // a publisher's connection
	js     jetstream.JetStream
	relay  *Relay
	srv    *http.Server
	url    string
	stream StreamOptions
	proxy  *tcpProxy // between the relay and NATS, with withRelayProxy

	natsDir, natsAddr string // the store and, withFixedNATSPort, the fixed address
}

// envOptions collects what the options of newEnv set.
type envOptions struct {
	config    Config
	stream    StreamOptions
	proxy     bool
	fixedPort bool
	history   func(e *testEnv)
}

// envOption configures newEnv.
type envOption func(*envOptions)

// withConfig edits the relay's Config (Conn is set by newEnv).
func withConfig(f func(*Config)) envOption { return func(o *envOptions) { f(&o.config) } }

// withStream edits the options of the JetStream stream.
func withStream(f func(*StreamOptions)) envOption { return func(o *envOptions) { f(&o.stream) } }

// withRelayProxy puts a TCP proxy that the test can cut between the relay
// and NATS (the publisher connects directly).
func withRelayProxy() envOption { return func(o *envOptions) { o.proxy = true } }

// withFixedNATSPort runs NATS on a fixed loopback port, so that the test can
// stop and start it again on the same port and store (restartNATS). Both
// connections reconnect forever.
func withFixedNATSPort() envOption { return func(o *envOptions) { o.fixedPort = true } }

// withHistory runs f after the stream exists and before the relay starts:
// events published there are in the store and the relay never dispatches
// them (it starts after the stream's last sequence), as for a relay
// instance that comes up after its clients' events were stored.
func withHistory(f func(e *testEnv)) envOption { return func(o *envOptions) { o.history = f } }

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("RELAY_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// newEnv starts NATS, the stream, a relay and its HTTP server; cleanup
// drains and shuts them down. It takes testing.TB so that benchmarks use
// it too.
func newEnv(t testing.TB, opts ...envOption) *testEnv {
	t.Helper()
	o := envOptions{config: Config{Verifier: mustVerifier(t), Logger: testLogger(t), Keepalive: time.Hour}}
	for _, f := range opts {
		f(&o)
	}
	e := &testEnv{t: t, stream: o.stream, natsDir: t.TempDir(), natsAddr: "127.0.0.1:0"}
	if o.fixedPort {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		e.natsAddr = ln.Addr().String()
		ln.Close()
	}
	e.startNATS()
	t.Cleanup(func() {
		if e.ns != nil {
			e.ns.Shutdown()
		}
	})
	relayURL := e.ns.ClientURL()
	if o.proxy {
		e.proxy = newTCPProxy(t, strings.TrimPrefix(relayURL, "nats://"))
		relayURL = "nats://" + e.proxy.addr
	}
	conn := []nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(50 * time.Millisecond), nats.Timeout(5 * time.Second)}
	var err error
	if e.nc, err = nats.Connect(relayURL, append(conn, nats.ReconnectBufSize(-1))...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.nc.Close)
	if e.pub, err = nats.Connect(e.ns.ClientURL(), conn...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.pub.Close)
	e.js, _ = jetstream.New(e.pub)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := EnsureStream(ctx, e.js, e.stream); err != nil {
		t.Fatal(err)
	}
	if o.history != nil {
		o.history(e)
	}
	// A deadline of its own: a long history (120,000 events on a busy
	// machine) may have used up the one above.
	sctx, scancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer scancel()
	e.startRelay(sctx, o.config)
	return e
}

// startRelay starts a relay with cfg on e.nc and its HTTP server on a
// loopback socket; cleanup drains and shuts both down.
func (e *testEnv) startRelay(ctx context.Context, cfg Config) {
	t := e.t
	t.Helper()
	var err error
	cfg.Conn = e.nc
	if e.relay, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	if err := e.relay.Start(ctx); err != nil {
		t.Fatal(err)
	}
	e.serveRelay()
}

// serveRelay serves e.relay, started, on a port of its own until the test
// ends.
func (e *testEnv) serveRelay() {
	t := e.t
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.srv = &http.Server{Handler: e.relay.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = e.srv.Serve(e.relay.Listener(ln)) }()
	e.url = "http://" + ln.Addr().String()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		e.relay.Drain()
		_ = e.srv.Shutdown(ctx)
		if err := e.relay.Shutdown(ctx); err != nil {
			t.Errorf("relay shutdown: %v", err)
		}
	})
}

// startNATS starts the embedded server on e.natsAddr with e.natsDir.
func (e *testEnv) startNATS() {
	e.t.Helper()
	var err error
	for range 50 { // a fixed port may take a moment to be free again
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		e.ns, err = embedded.Start(ctx, embedded.Options{StoreDir: e.natsDir, Listen: e.natsAddr})
		cancel()
		if err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	e.t.Fatalf("start NATS on %s: %v", e.natsAddr, err)
}

// restartNATS stops the NATS server and starts it again on the same port
// with the same store (withFixedNATSPort).
func (e *testEnv) restartNATS() {
	e.t.Helper()
	if e.natsAddr == "127.0.0.1:0" {
		e.t.Fatal("restartNATS needs withFixedNATSPort")
	}
	e.ns.Shutdown()
	e.ns = nil
	e.startNATS()
}

func mustVerifier(t testing.TB) *auth.Verifier {
	v, err := auth.NewVerifier(context.Background(), auth.Config{Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// waitLong is the hang guard of eventually: generous, since the machine is
// shared and the tests run with -race; tests never fail on speed.
const waitLong = 30 * time.Second

// eventually polls cond until it holds; after d it fails the test.
func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitCursor waits until the relay has dispatched seq.
func (e *testEnv) waitCursor(seq uint64) {
	e.t.Helper()
	eventually(e.t, waitLong, fmt.Sprintf("the relay's cursor to reach %d", seq), func() bool { return e.relay.Cursor() >= seq })
}

// waitOpen waits until the relay counts n open streams.
func (e *testEnv) waitOpen(n int) {
	e.t.Helper()
	eventually(e.t, waitLong, fmt.Sprintf("%d open streams", n), func() bool { return e.relay.OpenStreams() == n })
}

// metric reads GET /metrics and returns the sum of the samples of sel:
// `name`, or `name{label="value",...}` for the samples with those labels
// (see scraped, the one metric reader).
func (e *testEnv) metric(sel string) float64 {
	e.t.Helper()
	return e.scrape().value(e.t, sel)
}

// scraped is one GET /metrics, parsed.
type scraped map[string]*dto.MetricFamily

// scrapeURL gets url (a /metrics endpoint) over a new connection and parses
// the text format as Prometheus does.
func scrapeURL(t testing.TB, url string) scraped {
	t.Helper()
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d", url, resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return fams
}

func (e *testEnv) scrape() scraped { return scrapeURL(e.t, e.url+"/metrics") }

// samples returns the samples of the family named in sel that carry the
// labels of sel: `name` or `name{label="value",...}`.
func (s scraped) samples(t testing.TB, sel string) []*dto.Metric {
	t.Helper()
	name, labels, _ := strings.Cut(sel, "{")
	want := map[string]string{}
	if labels = strings.TrimSuffix(labels, "}"); labels != "" {
		for kv := range strings.SplitSeq(labels, ",") {
			k, v, _ := strings.Cut(kv, "=")
			uq, err := strconv.Unquote(v)
			if err != nil {
				t.Fatalf("selector %s: %v", sel, err)
			}
			want[k] = uq
		}
	}
	fam, ok := s[name]
	if !ok {
		t.Fatalf("metric %s not in /metrics", name)
	}
	var out []*dto.Metric
next:
	for _, m := range fam.GetMetric() {
		n := 0
		for _, l := range m.GetLabel() {
			if v, ok := want[l.GetName()]; ok {
				if v != l.GetValue() {
					continue next
				}
				n++
			}
		}
		if n == len(want) {
			out = append(out, m)
		}
	}
	if len(out) == 0 {
		t.Fatalf("no sample %s in /metrics", sel)
	}
	return out
}

// value returns the sum of the counter, gauge or untyped samples of sel.
func (s scraped) value(t testing.TB, sel string) float64 {
	t.Helper()
	var v float64
	for _, m := range s.samples(t, sel) {
		switch {
		case m.Counter != nil:
			v += m.Counter.GetValue()
		case m.Gauge != nil:
			v += m.Gauge.GetValue()
		case m.Untyped != nil:
			v += m.Untyped.GetValue()
		default:
			t.Fatalf("%s is not a counter or gauge", sel)
		}
	}
	return v
}

// histogram returns the observation count and sum of the histogram sel.
func (s scraped) histogram(t testing.TB, sel string) (count uint64, sum float64) {
	t.Helper()
	for _, m := range s.samples(t, sel) {
		if m.Histogram == nil {
			t.Fatalf("%s is not a histogram", sel)
		}
		count += m.Histogram.GetSampleCount()
		sum += m.Histogram.GetSampleSum()
	}
	return count, sum
}

// want checks samples by value: selector -> value.
func (s scraped) want(t testing.TB, want map[string]float64) {
	t.Helper()
	for sel, v := range want {
		if got := s.value(t, sel); got != v {
			t.Errorf("%s = %v, want %v", sel, got, v)
		}
	}
}
