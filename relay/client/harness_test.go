package client_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/sserelay/sserelay/embedded"
	"github.com/sserelay/sserelay/relay"
	"github.com/sserelay/sserelay/relay/auth"
	"github.com/sserelay/sserelay/relay/client"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).handleSignals.func1"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
	)
}

// relayEnv is a real embedded NATS server with the relay's stream and a
// relay serving HTTP on a loopback port. The relay can be stopped and
// started again on the same port (NATS and its store stay up).
type relayEnv struct {
	ns     *embedded.Server
	pub    *nats.Conn
	js     jetstream.JetStream
	addr   string // host:port of the relay, the same across restarts
	URL    string
	cfg    func(*relay.Config)
	secret atomic.Pointer[[]byte] // the relay's current signing secret

	nc    *nats.Conn // the running relay's connection
	relay *relay.Relay
	srv   *http.Server
	done  chan struct{} // closed when srv.Serve returns
}

type envOptions struct {
	stream relay.StreamOptions
	config func(*relay.Config)
}

// startEnv starts NATS, the stream and a relay. Call close when done.
func startEnv(storeDir string, o envOptions) (*relayEnv, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ns, err := embedded.Start(ctx, embedded.Options{StoreDir: storeDir, Listen: "127.0.0.1:0"})
	if err != nil {
		return nil, err
	}
	e := &relayEnv{ns: ns, addr: "127.0.0.1:0", cfg: o.config}
	secret := []byte("client-test-secret-0123456789abcdef")
	e.secret.Store(&secret)
	if e.pub, err = nats.Connect(ns.ClientURL()); err != nil {
		e.close()
		return nil, err
	}
	e.js, _ = jetstream.New(e.pub)
	if _, err := relay.EnsureStream(ctx, e.js, o.stream); err != nil {
		e.close()
		return nil, err
	}
	if err := e.start(); err != nil {
		e.close()
		return nil, err
	}
	e.URL = "http://" + e.addr
	return e, nil
}

// newEnv is startEnv for a test.
func newEnv(t testing.TB, o envOptions) *relayEnv {
	t.Helper()
	e, err := startEnv(t.TempDir(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.close)
	return e
}

func logger() *slog.Logger {
	if os.Getenv("RELAY_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// start starts a relay on e.addr.
func (e *relayEnv) start() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v, err := auth.NewVerifier(ctx, auth.Config{Secret: *e.secret.Load()})
	if err != nil {
		return err
	}
	nc, err := nats.Connect(e.ns.ClientURL())
	if err != nil {
		return err
	}
	cfg := relay.Config{Conn: nc, Verifier: v, Logger: logger(), Retry: 100 * time.Millisecond, TokenCache: -1}
	if e.cfg != nil {
		e.cfg(&cfg)
	}
	r, err := relay.New(cfg)
	if err == nil {
		err = r.Start(ctx)
	}
	if err != nil {
		nc.Close()
		return err
	}
	var ln net.Listener
	for i := 0; ; i++ { // the old port can take a moment to be free again
		ln, err = net.Listen("tcp", e.addr)
		if err == nil || i == 50 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		_ = r.Shutdown(ctx)
		nc.Close()
		return err
	}
	e.addr = ln.Addr().String()
	e.nc, e.relay = nc, r
	e.srv = &http.Server{Handler: r.Handler(), ReadHeaderTimeout: 5 * time.Second}
	e.done = make(chan struct{})
	go func() { defer close(e.done); _ = e.srv.Serve(ln) }()
	return nil
}

// stop stops the relay as SIGTERM does: drain, then shut down.
func (e *relayEnv) stop() {
	if e.relay == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e.relay.Drain()
	_ = e.srv.Shutdown(ctx)
	<-e.done
	_ = e.relay.Shutdown(ctx)
	e.nc.Close()
	e.relay = nil
}

func (e *relayEnv) close() {
	e.stop()
	if e.pub != nil {
		e.pub.Close()
	}
	e.ns.Shutdown()
}

// rotate gives the relay a new signing secret: tokens signed with the old
// one are refused from the next start on.
func (e *relayEnv) rotate() {
	s := []byte(fmt.Sprintf("rotated-secret-%d-0123456789abcdef", time.Now().UnixNano()))
	e.secret.Store(&s)
}

// token signs a token for sub with the current secret, valid for ttl
// (0: no expiry), edited by mods.
func (e *relayEnv) token(sub string, ttl time.Duration, mods ...func(*auth.Claims)) (string, error) {
	c := auth.Claims{RegisteredClaims: jwt.RegisteredClaims{Subject: sub}}
	if ttl != 0 {
		c.ExpiresAt = jwt.NewNumericDate(time.Now().Add(ttl))
	}
	for _, m := range mods {
		m(&c)
	}
	return auth.Sign(*e.secret.Load(), c)
}

// tokens is a TokenSource that counts its calls.
type tokens struct {
	e     *relayEnv
	sub   string
	ttl   time.Duration
	calls atomic.Int32
}

func (s *tokens) Token(context.Context) (string, error) {
	s.calls.Add(1)
	return s.e.token(s.sub, s.ttl)
}

// publish stores data on subject and returns its sequence. hdrs are name,
// value pairs.
func (e *relayEnv) publish(subject, data string, hdrs ...string) (uint64, error) {
	m := nats.NewMsg(subject)
	m.Data = []byte(data)
	for i := 0; i+1 < len(hdrs); i += 2 {
		m.Header.Set(hdrs[i], hdrs[i+1])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := e.js.PublishMsg(ctx, m)
	if err != nil {
		return 0, fmt.Errorf("publish %s: %w", subject, err)
	}
	return ack.Sequence, nil
}

func (e *relayEnv) mustPublish(t testing.TB, subject, data string, hdrs ...string) uint64 {
	t.Helper()
	seq, err := e.publish(subject, data, hdrs...)
	if err != nil {
		t.Fatal(err)
	}
	return seq
}

// waitCursor waits until the running relay has dispatched seq.
func (e *relayEnv) waitCursor(t testing.TB, seq uint64) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for e.relay.Cursor() < seq {
		if time.Now().After(deadline) {
			t.Fatalf("relay cursor %d did not reach %d", e.relay.Cursor(), seq)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// running is a client's Run in a goroutine of the test, its events on a
// channel.
type running struct {
	c      *client.Client
	events chan client.Event
	done   chan error
	cancel context.CancelFunc

	mu        sync.Mutex
	connected []client.Connected
	errs      []error
	waits     []time.Duration // the wait OnError announced with each error
}

// runClient creates a client for cfg (OnConnect and OnError are recorded)
// and runs it until the test ends.
func runClient(t testing.TB, cfg client.Config) *running {
	t.Helper()
	r := &running{events: make(chan client.Event, 4096), done: make(chan error, 1)}
	cfg.OnConnect = func(c client.Connected) { r.mu.Lock(); r.connected = append(r.connected, c); r.mu.Unlock() }
	cfg.OnError = func(err error, wait time.Duration) {
		r.mu.Lock()
		r.errs, r.waits = append(r.errs, err), append(r.waits, wait)
		r.mu.Unlock()
	}
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.c = c
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go func() {
		r.done <- c.Run(ctx, func(ev client.Event) error {
			select {
			case r.events <- ev:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(10 * time.Second):
			t.Error("client did not stop after its context ended")
		}
	})
	return r
}

// next returns the next event, or fails the test after a generous wait.
func (r *running) next(t testing.TB) client.Event {
	t.Helper()
	select {
	case ev := <-r.events:
		return ev
	case err := <-r.done:
		t.Fatalf("client stopped: %v", err)
	case <-time.After(20 * time.Second):
		t.Fatalf("no event within 20 s; errors so far: %v", r.errors())
	}
	return client.Event{}
}

// expectData reads events and checks that their data are exactly want, in
// order: nothing lost, nothing twice, nothing else.
func (r *running) expectData(t testing.TB, want ...string) {
	t.Helper()
	for _, w := range want {
		if ev := r.next(t); ev.Data != w || ev.Reset != nil {
			t.Fatalf("got event %+v, want data %q", ev, w)
		}
	}
}

func (r *running) waitConnected(t testing.TB, n int) []client.Connected {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r.mu.Lock()
		got := append([]client.Connected(nil), r.connected...)
		r.mu.Unlock()
		if len(got) >= n {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d streams opened, want %d; errors: %v", len(got), n, r.errors())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// firstWait waits for the first error the client reported and returns the
// wait it announced with it.
func (r *running) firstWait(t testing.TB) time.Duration {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r.mu.Lock()
		if len(r.waits) > 0 {
			defer r.mu.Unlock()
			return r.waits[0]
		}
		r.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatal("the client reported no error within 20 s")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func (r *running) errors() []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]error(nil), r.errs...)
}

// freezeProxy is a TCP proxy that can stop forwarding the connections it
// has (reading and dropping their bytes, as a dead NAT entry or a hung
// proxy would) while it forwards new ones.
type freezeProxy struct {
	ln       net.Listener
	upstream string
	wg       sync.WaitGroup
	accepted atomic.Int32

	mu    sync.Mutex
	pairs map[*proxyPair]struct{}
}

type proxyPair struct {
	a, b   net.Conn
	frozen atomic.Bool
}

func newFreezeProxy(t testing.TB, upstream string) *freezeProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &freezeProxy{ln: ln, upstream: upstream, pairs: map[*proxyPair]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *freezeProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.upstream)
		if err != nil {
			c.Close()
			continue
		}
		p.accepted.Add(1)
		pp := &proxyPair{a: c, b: up}
		p.mu.Lock()
		p.pairs[pp] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(2)
		go p.pipe(pp, up, c)
		go p.pipe(pp, c, up)
	}
}

func (p *freezeProxy) pipe(pp *proxyPair, dst, src net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 16<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !pp.frozen.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				err = werr
			}
		}
		if err != nil {
			break
		}
	}
	pp.a.Close()
	pp.b.Close()
	p.mu.Lock()
	delete(p.pairs, pp)
	p.mu.Unlock()
}

// freeze stops forwarding on every open connection.
func (p *freezeProxy) freeze() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for pp := range p.pairs {
		pp.frozen.Store(true)
	}
}

func (p *freezeProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for pp := range p.pairs {
		pp.a.Close()
		pp.b.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
