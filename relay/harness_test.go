package relay

import (
	"bufio"
	"context"
	"errors"
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

	"github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
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
	t        testing.TB
	ns       *embedded.Server
	nc       *nats.Conn // the relay's connection
	pub      *nats.Conn // a publisher's connection
	js       jetstream.JetStream
	relay    *Relay
	srv      *http.Server
	url      string
	stream   StreamOptions
	proxy    *tcpProxy // between the relay and NATS, with withRelayProxy
	useProxy bool
}

// withRelayProxy puts a TCP proxy that the test can cut between the relay
// and NATS (the publisher connects directly).
func withRelayProxy() envOption { return func(e *testEnv, _ *Config) { e.useProxy = true } }

type envOption func(*testEnv, *Config)

func withConfig(f func(*Config)) envOption { return func(_ *testEnv, c *Config) { f(c) } }
func withStream(f func(*StreamOptions)) envOption {
	return func(e *testEnv, _ *Config) { f(&e.stream) }
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("RELAY_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func newEnv(t testing.TB, opts ...envOption) *testEnv {
	t.Helper()
	e := &testEnv{t: t}
	cfg := Config{Verifier: mustVerifier(t), Logger: testLogger(t), Keepalive: time.Hour}
	for _, o := range opts {
		o(e, &cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ns, err := embedded.Start(ctx, embedded.Options{StoreDir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	e.ns = ns
	t.Cleanup(ns.Shutdown)
	relayURL := ns.ClientURL()
	if e.useProxy {
		e.proxy = newTCPProxy(t, strings.TrimPrefix(relayURL, "nats://"))
		relayURL = "nats://" + e.proxy.addr
	}
	e.nc, err = nats.Connect(relayURL, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond), nats.ReconnectBufSize(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.nc.Close)
	e.pub, err = nats.Connect(ns.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.pub.Close)
	e.js, _ = jetstream.New(e.pub)
	if _, err := EnsureStream(ctx, e.js, e.stream); err != nil {
		t.Fatal(err)
	}
	cfg.Conn = e.nc
	e.relay, err = New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.relay.Start(ctx); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.srv = &http.Server{Handler: e.relay.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = e.srv.Serve(ln) }()
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
	return e
}

func mustVerifier(t testing.TB) *auth.Verifier {
	v, err := auth.NewVerifier(context.Background(), auth.Config{Secret: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// token mints a token for sub, valid for an hour, edited by mods.
func token(t testing.TB, sub string, mods ...func(*auth.Claims)) string {
	t.Helper()
	c := auth.Claims{RegisteredClaims: jwt.RegisteredClaims{Subject: sub, ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))}}
	for _, m := range mods {
		m(&c)
	}
	s, err := auth.Sign(testSecret, c)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// publish stores an event through JetStream and returns its sequence.
// hdrs are name, value pairs.
func (e *testEnv) publish(subject, data string, hdrs ...string) uint64 {
	e.t.Helper()
	m := nats.NewMsg(subject)
	m.Data = []byte(data)
	for i := 0; i+1 < len(hdrs); i += 2 {
		m.Header.Set(hdrs[i], hdrs[i+1])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := e.js.PublishMsg(ctx, m)
	if err != nil {
		e.t.Fatalf("publish %s: %v", subject, err)
	}
	return ack.Sequence
}

// waitCursor waits until the relay has dispatched seq.
func (e *testEnv) waitCursor(seq uint64) {
	e.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for e.relay.Cursor() < seq {
		if time.Now().After(deadline) {
			e.t.Fatalf("relay cursor %d did not reach %d", e.relay.Cursor(), seq)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// sseEvent is one dispatched event as a spec-following client sees it.
type sseEvent struct {
	ID    string // the id field of this block ("" if none)
	HasID bool
	Event string
	Data  string
	Retry string
}

// sseStream reads a text/event-stream response.
type sseStream struct {
	Resp     *http.Response
	br       *bufio.Reader
	Comments []string
	cancel   context.CancelFunc
}

// open starts GET /v1/events?query with the given headers; it fails the
// test unless the answer is a 200 event stream.
func (e *testEnv) open(query string, hdr http.Header) *sseStream {
	e.t.Helper()
	s, err := e.tryOpen(query, hdr)
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

func (e *testEnv) tryOpen(query string, hdr http.Header) (*sseStream, error) {
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.url+"/v1/events?"+query, nil)
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		return nil, err
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		return nil, fmt.Errorf("GET /v1/events?%s: %d %s", query, resp.StatusCode, b)
	}
	s := &sseStream{Resp: resp, br: bufio.NewReader(resp.Body), cancel: cancel}
	e.t.Cleanup(s.Close)
	return s, nil
}

// Close ends the stream from the client side.
func (s *sseStream) Close() {
	s.cancel()
	s.Resp.Body.Close()
}

// Next returns the next block that carries data (blocks with only retry or
// comments are recorded and skipped, as a browser does).
func (s *sseStream) Next(timeout time.Duration) (sseEvent, error) {
	type result struct {
		ev  sseEvent
		err error
	}
	ch := make(chan result, 1)
	go func() {
		ev, err := s.read()
		ch <- result{ev, err}
	}()
	select {
	case r := <-ch:
		return r.ev, r.err
	case <-time.After(timeout):
		s.Close() // unblocks read
		<-ch
		return sseEvent{}, fmt.Errorf("no event within %s", timeout)
	}
}

func (s *sseStream) read() (sseEvent, error) {
	var ev sseEvent
	hasData := false
	for {
		line, err := s.br.ReadString('\n')
		if err != nil {
			return sseEvent{}, err
		}
		line = strings.TrimSuffix(line, "\n")
		if line == "" {
			if hasData {
				ev.Data = strings.TrimSuffix(ev.Data, "\n")
				return ev, nil
			}
			ev = sseEvent{}
			continue
		}
		if line[0] == ':' {
			s.Comments = append(s.Comments, line)
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "id":
			ev.ID, ev.HasID = value, true
		case "event":
			ev.Event = value
		case "data":
			ev.Data += value + "\n"
			hasData = true
		case "retry":
			ev.Retry = value
		}
	}
}

// MustNext returns the next event or fails the test.
func (s *sseStream) MustNext(t testing.TB) sseEvent {
	t.Helper()
	ev, err := s.Next(10 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// Connected reads the sserelay.connected event that opens every stream.
func (s *sseStream) Connected(t testing.TB) sseEvent {
	t.Helper()
	ev := s.MustNext(t)
	if ev.Event != EventConnected {
		t.Fatalf("first event = %+v, want %s", ev, EventConnected)
	}
	return ev
}

// ExpectIDs reads events and checks that their ids are exactly want.
func (s *sseStream) ExpectIDs(t testing.TB, want ...uint64) {
	t.Helper()
	for _, w := range want {
		ev := s.MustNext(t)
		if ev.ID != strconv.FormatUint(w, 10) {
			t.Fatalf("got event %+v, want id %d", ev, w)
		}
	}
}

// ExpectQuiet checks that no event arrives within d.
func (s *sseStream) ExpectQuiet(t testing.TB, d time.Duration) {
	t.Helper()
	ev, err := s.Next(d)
	if err == nil {
		t.Fatalf("unexpected event %+v", ev)
	}
	if !strings.Contains(err.Error(), "no event within") && !errors.Is(err, io.EOF) {
		t.Fatalf("stream error: %v", err)
	}
}

func bearer(tok string) http.Header {
	return http.Header{"Authorization": {"Bearer " + tok}}
}
