package relay

// The relay's NATS connection fails: a server restart, a network cut with trimming.

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestReconnectNATSRestart: the NATS server restarts under open streams;
// the relay's connection reconnects, its consumer resumes after its cursor,
// and every stream gets every event exactly once, with nothing but a delay.
func TestReconnectNATSRestart(t *testing.T) {
	// Ring off: the resume after the restart reads the restored store.
	e := newEnv(t, withFixedNATSPort(), withConfig(func(c *Config) { c.RingEvents = -1 }))
	alice, bob := token(t, "alice"), token(t, "bob")
	b0 := e.publishRetry("sse.demo.bob", "b0")
	b1 := e.publishRetry("sse.demo.bob.t1", "b1")
	e.waitCursor(b1)

	aAll := e.open("app_id=demo", bearer(alice))
	aAll.Connected(t)
	aT1 := e.open("app_id=demo&topic=t1", bearer(alice))
	aT1.Connected(t)
	h := bearer(bob)
	h.Set("Last-Event-ID", strconv.FormatUint(b0, 10))
	bRes := e.open("app_id=demo", h)
	bRes.Connected(t)

	type ev struct {
		seq       uint64
		alice, t1 bool
		bob       bool
	}
	var evs []ev
	pub := func(phase string, n int) {
		for i := range n {
			var x ev
			switch i % 4 {
			case 0:
				x = ev{seq: e.publishRetry("sse.demo.alice", phase+strconv.Itoa(i)), alice: true}
			case 1:
				x = ev{seq: e.publishRetry("sse.demo.alice.t1", phase+strconv.Itoa(i)), alice: true, t1: true}
			case 2:
				x = ev{seq: e.publishRetry("sse.demo.bob.t2", phase+strconv.Itoa(i)), bob: true}
			default:
				x = ev{seq: e.publishRetry("sse.demo.alice.t2", phase+strconv.Itoa(i)), alice: true}
			}
			evs = append(evs, x)
		}
	}
	ids := func(from int, f func(ev) bool) []uint64 {
		var out []uint64
		for _, x := range evs[from:] {
			if f(x) {
				out = append(out, x.seq)
			}
		}
		return out
	}
	isAlice := func(x ev) bool { return x.alice }
	isT1 := func(x ev) bool { return x.t1 }
	isBob := func(x ev) bool { return x.bob }

	// Before: delivered live.
	pub("before", 8)
	aAll.ExpectIDs(t, ids(0, isAlice)...)
	aT1.ExpectIDs(t, ids(0, isT1)...)
	bRes.ExpectIDs(t, append([]uint64{b1}, ids(0, isBob)...)...)

	// Right before the restart: stored, perhaps not dispatched yet.
	mark := len(evs)
	pub("edge", 8)
	e.restartNATS()
	eventually(t, 30*time.Second, "the relay to be ready again", func() bool {
		return e.relay.Ready() == nil && e.pub.IsConnected()
	})
	pub("after", 12)

	aAll.ExpectIDs(t, ids(mark, isAlice)...)
	aT1.ExpectIDs(t, ids(mark, isT1)...)
	bRes.ExpectIDs(t, ids(mark, isBob)...)

	// A resume across the restart reads the restored store.
	h = bearer(alice)
	h.Set("Last-Event-ID", "0")
	late := e.open("app_id=demo", h)
	late.Connected(t)
	late.ExpectIDs(t, ids(0, isAlice)...)

	// And the live path still works for everyone.
	mark = len(evs)
	pub("last", 4)
	aAll.ExpectIDs(t, ids(mark, isAlice)...)
	aT1.ExpectIDs(t, ids(mark, isT1)...)
	bRes.ExpectIDs(t, ids(mark, isBob)...)
	late.ExpectIDs(t, ids(mark, isAlice)...)
	if n := e.metric(`sserelay_resets_total{reason="history-gone"}`); n != 0 {
		t.Fatalf("history-gone resets = %v, want 0", n)
	}
	if e.nc.Stats().Reconnects == 0 {
		t.Fatal("the relay's connection never reconnected: the test restarted nothing")
	}
}

// tcpProxy forwards loopback TCP connections and can cut them all and
// refuse new ones for a while: a network outage between two real peers.
type tcpProxy struct {
	addr     string
	upstream string
	ln       net.Listener
	mu       sync.Mutex
	cut      bool
	gate     chan struct{} // non-nil while held: closed to release
	conns    map[net.Conn]struct{}
	wg       sync.WaitGroup
}

func newTCPProxy(t testing.TB, upstream string) *tcpProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &tcpProxy{addr: ln.Addr().String(), upstream: upstream, ln: ln, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *tcpProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.cut {
			p.mu.Unlock()
			c.Close()
			continue
		}
		up, err := net.Dial("tcp", p.upstream)
		if err != nil {
			p.mu.Unlock()
			c.Close()
			continue
		}
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.wg.Add(2)
		p.mu.Unlock()
		pipe := func(dst, src net.Conn) {
			defer p.wg.Done()
			_, _ = io.Copy(dst, src)
			dst.Close()
			src.Close()
		}
		// NATS to the relay goes through the gate (see hold).
		down := func(dst, src net.Conn) {
			defer p.wg.Done()
			buf := make([]byte, 32<<10)
			for {
				n, err := src.Read(buf)
				if n > 0 {
					p.mu.Lock()
					gate := p.gate
					p.mu.Unlock()
					if gate != nil {
						<-gate
					}
					if _, werr := dst.Write(buf[:n]); werr != nil {
						break
					}
				}
				if err != nil {
					break
				}
			}
			dst.Close()
			src.Close()
		}
		go pipe(up, c)
		go down(c, up)
	}
}

// setCut cuts every connection and refuses new ones (true), or lets them
// through again (false).
func (p *tcpProxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for c := range p.conns {
			c.Close()
		}
		clear(p.conns)
	}
}

// hold stops what NATS sends to the relay (acknowledgements, deliveries)
// from reaching it, without cutting anything: what the relay sends still
// arrives. release lets it all through.
func (p *tcpProxy) hold() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gate == nil {
		p.gate = make(chan struct{})
	}
}

func (p *tcpProxy) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.gate != nil {
		close(p.gate)
		p.gate = nil
	}
}

func (p *tcpProxy) close() {
	p.release()
	p.ln.Close()
	p.setCut(true)
	p.wg.Wait()
}

// TestNetworkCutTrimmedGap: the relay's NATS connection is cut while events
// are published and retention trims some of them. When it comes back, the
// open stream is told history-gone (with the id before the first event it
// can still get) and then gets exactly the events that remain, in order.
func TestNetworkCutTrimmedGap(t *testing.T) {
	e := newEnv(t, withRelayProxy(), withStream(func(o *StreamOptions) { o.MaxMsgs = 10 }))
	tok := token(t, "alice")
	s := e.open("app_id=demo", bearer(tok))
	s.Connected(t)
	before := e.publish("sse.demo.alice", "before")
	s.ExpectIDs(t, before)

	e.proxy.setCut(true)
	eventually(t, waitLong, "the relay's connection to go down after the cut", func() bool { return !e.nc.IsConnected() })
	var seqs []uint64
	for range 30 {
		seqs = append(seqs, e.publish("sse.demo.alice", "during"))
	}
	kept := seqs[len(seqs)-10:] // MaxMsgs 10: the rest is trimmed
	e.proxy.setCut(false)

	ev := s.MustNext(t)
	if ev.Event != EventReset || ev.Data != `{"reason":"history-gone"}` || ev.ID != itoa(kept[0]-1) {
		t.Fatalf("after the outage got %+v, want a history-gone reset with id %d", ev, kept[0]-1)
	}
	s.ExpectIDs(t, kept...)
	after := e.publish("sse.demo.alice", "after")
	s.ExpectIDs(t, after)
}

// TestResumeWhileNATSDown: a resume that needs the store while NATS is not
// connected ends with a retry hint, so that the clients of an outage come
// back spread out, and says in its log line and answer that NATS is not
// connected (not a buffer limit of nats.go's that no operator set).
func TestResumeWhileNATSDown(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	e := newEnv(t, withConfig(func(c *Config) {
		c.RingEvents = -1
		c.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}))
	alice := token(t, "alice")
	first := e.publish("sse.demo.alice", "a1")
	e.publish("sse.demo.alice", "a2")
	e.waitCursor(e.publish("sse.demo.alice", "a3"))
	e.ns.Shutdown()
	eventually(t, waitLong, "the relay to see NATS down", func() bool { return !e.nc.IsConnected() })

	s := e.resume("app_id=demo", alice, first)
	rest := s.ReadRest(t)
	if !strings.Contains(rest, "retry: ") {
		t.Errorf("the stream ended without a retry hint: %q", rest)
	}
	if strings.Contains(rest, "id: ") {
		t.Errorf("events delivered without a store: %q", rest)
	}
	eventually(t, waitLong, "the close to be logged", func() bool { return strings.Contains(logs.String(), `"reason":"store-error"`) })
	if l := logs.String(); !strings.Contains(l, "NATS not connected") || strings.Contains(l, "outbound buffer") {
		t.Errorf("the store error does not say NATS is not connected:\n%s", l)
	}

	p := do(t, http.MethodGet, e.url+"/v1/events?app_id=demo&poll=1&last_event_id="+itoa(first), bearer(alice), "")
	wantError(t, p, http.StatusServiceUnavailable, "event store unavailable (NATS not connected): retry later")
	if p.Header.Get("Retry-After") == "" {
		t.Errorf("poll 503 without Retry-After: %v", p.Header)
	}
}
