package relay

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// tcpProxy forwards loopback TCP connections and can cut them all and
// refuse new ones for a while: a network outage between two real peers.
type tcpProxy struct {
	addr     string
	upstream string
	ln       net.Listener
	mu       sync.Mutex
	cut      bool
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
		go pipe(up, c)
		go pipe(c, up)
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

func (p *tcpProxy) close() {
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
	deadline := time.Now().Add(10 * time.Second)
	for e.nc.IsConnected() {
		if time.Now().After(deadline) {
			t.Fatal("relay connection still up after the cut")
		}
		time.Sleep(10 * time.Millisecond)
	}
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

func itoa(n uint64) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}
