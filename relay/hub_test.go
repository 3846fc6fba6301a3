package relay

import (
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
)

// The hub on its own: no HTTP, no NATS. Sessions are never run; the tests
// read their queues as the writer would.

func testHub(t testing.TB, edit ...func(*Config)) *hub {
	t.Helper()
	cfg := Config{SubjectPrefix: "sse", QueueEvents: 64, QueueBytes: 1 << 20, ReplayBatch: 16, RingEvents: -1, Logger: testLogger(t)}
	for _, e := range edit {
		e(&cfg)
	}
	return newHub(&cfg, newMetrics())
}

func mustRegister(t *testing.T, h *hub, s *session) uint64 {
	t.Helper()
	c, reg := h.register(s)
	if reg != registered {
		t.Fatalf("register %s: %v", s.connID, reg)
	}
	return c
}

// queued returns the sequences in s's queue and empties it.
func queued(t *testing.T, s *session) []uint64 {
	t.Helper()
	frames, overflow := s.take()
	if overflow {
		t.Fatalf("session %s overflowed", s.connID)
	}
	seqs := []uint64{}
	for _, f := range frames {
		if !strings.HasPrefix(string(f.buf), "id: "+strconv.FormatUint(f.seq, 10)+"\n") {
			t.Fatalf("frame %d starts %q", f.seq, f.buf)
		}
		seqs = append(seqs, f.seq)
	}
	return seqs
}

func equalSeqs(a, b []uint64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestHubDeliverFilters(t *testing.T) {
	h := testHub(t)
	h.setCursor(10)
	alice := newSession(nil, "conn-alice-1", "alice", "app", []string{"alice"}, nil)
	aliceTopic := newSession(nil, "conn-alice-2", "alice", "app", []string{"alice"}, []string{"orders"})
	bob := newSession(nil, "conn-bob-001", "bob", "app", []string{"bob", "room"}, nil)
	for _, s := range []*session{alice, aliceTopic, bob} {
		if c := mustRegister(t, h, s); c != 10 {
			t.Fatalf("register returned cursor %d, want 10", c)
		}
	}

	h.deliver(11, "sse.app.alice", "", "", "", []byte("a"))                         // alice's feed, no topic
	h.deliver(12, "sse.app.alice.orders.eu", "e", "", "", []byte("b"))              // topic orders.eu
	h.deliver(13, "sse.app.alice.ordersx", "", "", "", []byte("c"))                 // not topic orders
	h.deliver(14, "sse.app.room", "", "", "", []byte("d"))                          // bob's second feed
	h.deliver(15, "sse.other.alice", "", "", "", []byte("e"))                       // another app
	h.deliver(16, "sse.app.alice", "", "conn-alice-1", "alice", []byte("f"))        // from alice's first connection
	h.deliver(17, "sse.app.room", "", "conn-bob-001", "mallory", []byte("g"))       // another user's claim on bob's id
	h.deliver(18, "sse.app.room", "", "conn-bob-001", "", []byte("h"))              // a raw publisher: the id alone
	h.deliver(19, "badsubject", "", "", "", []byte("i"))                            // dropped, cursor moves
	h.deliver(20, "sse.app.alice", "sserelay.connected", "", "", []byte("j"))       // reserved name: dropped
	h.deliver(21, "sse.app.alice.orders", "", "conn-alice-2", "alice", []byte("k")) // excludes the topic session only

	for _, tt := range []struct {
		s    *session
		want []uint64
	}{
		{alice, []uint64{11, 12, 13, 21}},
		{aliceTopic, []uint64{12}},
		{bob, []uint64{14, 17}},
	} {
		if got := queued(t, tt.s); !equalSeqs(got, tt.want) {
			t.Errorf("%s got %v, want %v", tt.s.connID, got, tt.want)
		}
	}
	if c := h.cursorNow(); c != 21 {
		t.Errorf("cursor %d, want 21", c)
	}
	if n := testutil.ToFloat64(h.metrics.dropped); n != 2 {
		t.Errorf("dropped %v, want 2", n)
	}
	if n := testutil.ToFloat64(h.metrics.dispatched); n != 11 {
		t.Errorf("dispatched %v, want 11", n)
	}

	// The cursor never goes back, and an old sequence is not delivered again.
	h.deliver(20, "sse.app.alice", "", "", "", []byte("again"))
	if c := h.cursorNow(); c != 21 {
		t.Errorf("cursor went back to %d", c)
	}
	if got := queued(t, alice); len(got) != 0 {
		t.Errorf("an old sequence was queued: %v", got)
	}

	// One frame per event, shared by its recipients.
	h.deliver(22, "sse.app.alice", "", "", "", []byte("shared"))
	fa, _ := alice.take()
	fb, _ := aliceTopic.take()
	if len(fa) != 1 || len(fb) != 0 {
		t.Fatalf("got %d and %d frames", len(fa), len(fb))
	}
	if want := "id: 22\ndata: shared\n\n"; string(fa[0].buf) != want {
		t.Errorf("frame %q, want %q", fa[0].buf, want)
	}

	h.unregister(alice)
	h.deliver(23, "sse.app.alice", "", "", "", []byte("gone"))
	if got := queued(t, alice); len(got) != 0 {
		t.Errorf("an unregistered session got %v", got)
	}
	h.unregister(aliceTopic)
	h.unregister(bob)
	if len(h.feeds) != 0 || h.openStreams() != 0 {
		t.Errorf("after unregistering all: %d feeds, %d open", len(h.feeds), h.openStreams())
	}
}

func TestHubOverflowRestart(t *testing.T) {
	h := testHub(t, func(c *Config) { c.QueueEvents = 3 })
	s := newSession(nil, "conn-slow-01", "alice", "app", []string{"alice"}, nil)
	mustRegister(t, h, s)
	for seq := uint64(1); seq <= 4; seq++ {
		h.deliver(seq, "sse.app.alice", "", "", "", []byte("x"))
	}
	if frames, overflow := s.take(); !overflow || frames != nil {
		t.Fatalf("take = %d frames, overflow %v; want the overflow", len(frames), overflow)
	}
	h.deliver(5, "sse.app.alice", "", "", "", []byte("x")) // dropped too: the session catches up to the cursor
	if c := h.restart(s); c != 5 {
		t.Fatalf("restart returned %d, want the cursor 5", c)
	}
	h.deliver(6, "sse.app.alice", "", "", "", []byte("x"))
	if got := queued(t, s); !equalSeqs(got, []uint64{6}) {
		t.Fatalf("after restart got %v, want [6]", got)
	}
	h.unregister(s)
}

func TestHubResetAllOnJump(t *testing.T) {
	h := testHub(t)
	h.setCursor(5)
	a := newSession(nil, "conn-aaaa-01", "alice", "app", []string{"alice", "room"}, nil)
	b := newSession(nil, "conn-bbbb-01", "bob", "app", []string{"bob"}, []string{"t"})
	mustRegister(t, h, a)
	mustRegister(t, h, b)
	h.deliver(9, "sse.app.room", "", "", "", []byte("after the gap")) // 6..8 were trimmed unseen
	fa, _ := a.take()
	fb, _ := b.take()
	if len(fa) != 2 || len(fb) != 1 {
		t.Fatalf("got %d and %d frames; want reset+event and reset, once per session", len(fa), len(fb))
	}
	want := "id: 8\nevent: " + EventReset + "\ndata: {\"reason\":\"" + ResetHistoryGone + "\"}\n\n"
	for _, f := range []*frame{fa[0], fb[0]} {
		if f.seq != 8 || string(f.buf) != want {
			t.Errorf("reset frame %d %q, want 8 %q", f.seq, f.buf, want)
		}
	}
	if fa[1].seq != 9 {
		t.Errorf("event after the reset has seq %d", fa[1].seq)
	}
	if n := testutil.ToFloat64(h.metrics.resetGone); n != 2 {
		t.Errorf("sserelay_resets_total{reason=history-gone} %v, want one per session: 2", n)
	}
	h.unregister(a)
	h.unregister(b)
}

func TestHubFull(t *testing.T) {
	h := testHub(t, func(c *Config) { c.MaxStreams = 2 })
	s1 := newSession(nil, "conn-0000-01", "u", "app", []string{"u"}, nil)
	s2 := newSession(nil, "conn-0000-02", "u", "app", []string{"u"}, nil)
	s3 := newSession(nil, "conn-0000-03", "u", "app", []string{"u"}, nil)
	mustRegister(t, h, s1)
	mustRegister(t, h, s2)
	if _, reg := h.register(s3); reg != refusedFull {
		t.Fatalf("third register: %v, want full", reg)
	}
	h.deliver(1, "sse.app.u", "", "", "", []byte("x"))
	if got := queued(t, s3); len(got) != 0 {
		t.Fatalf("a refused session got %v", got)
	}
	h.unregister(s1)
	mustRegister(t, h, s3)
	if n := h.openStreams(); n != 2 {
		t.Fatalf("open %d, want 2", n)
	}
	h.unregister(s2)
	h.unregister(s3)
}

func TestHubDrainSignalsAndAborts(t *testing.T) {
	h := testHub(t)
	s := newSession(nil, "conn-drain-1", "u", "app", []string{"u", "v"}, nil)
	mustRegister(t, h, s)
	client, server := net.Pipe()
	defer client.Close()
	s.conn = server
	h.drain()
	if !s.kicked.Load() {
		t.Fatal("drain did not signal the session")
	}
	if _, reg := h.register(newSession(nil, "conn-drain-2", "u", "app", []string{"u"}, nil)); reg != refusedDraining {
		t.Fatalf("register while draining: %v", reg)
	}
	h.abortAll()
	if _, err := server.Write([]byte("x")); err == nil {
		t.Fatal("abortAll left the connection open")
	}
	h.unregister(s)
	h.wait()
}

// Registrations racing a drain: each is either refused or counted before
// wait starts, so wait returns once the registered ones leave (run with
// -race: an Add concurrent with Wait is reported).
func TestHubDrainRegisterRace(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	for round := range 20 {
		h := testHub(t)
		var (
			wg    sync.WaitGroup
			start = make(chan struct{})
			in    = make(chan *session, 64)
		)
		for i := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				s := newSession(nil, "conn-race-"+strconv.Itoa(i), "u", "app", []string{"u"}, nil)
				if _, reg := h.register(s); reg == registered {
					in <- s
				}
			}()
		}
		waited := make(chan struct{})
		close(start)
		go func() {
			h.drain()
			h.wait()
			close(waited)
		}()
		wg.Wait()
		close(in)
		for s := range in {
			h.unregister(s)
		}
		<-waited
		if h.openStreams() != 0 || len(h.feeds) != 0 {
			t.Fatalf("round %d: %d open, %d feeds after all left", round, h.openStreams(), len(h.feeds))
		}
		if _, reg := h.register(newSession(nil, "conn-late-01", "u", "app", []string{"u"}, nil)); reg != refusedDraining {
			t.Fatalf("round %d: register after drain: %v", round, reg)
		}
	}
}

// TestFeedSet: a feed's set holds one session without a map, then any
// number, and yields each exactly once.
func TestFeedSet(t *testing.T) {
	a, b, c := &session{connID: "a"}, &session{connID: "b"}, &session{connID: "c"}
	ids := func(f feedSet) string {
		var got []string
		for s := range f.all {
			got = append(got, s.connID)
		}
		slices.Sort(got)
		return strings.Join(got, ",")
	}
	var f feedSet
	if f = f.add(a); f.many != nil || f.len() != 1 || ids(f) != "a" {
		t.Fatalf("one session: many %v, len %d, %q", f.many, f.len(), ids(f))
	}
	if f = f.remove(b); ids(f) != "a" {
		t.Fatalf("removing another session left %q", ids(f))
	}
	f = f.add(b).add(c)
	if f.len() != 3 || ids(f) != "a,b,c" {
		t.Fatalf("three sessions: len %d, %q", f.len(), ids(f))
	}
	f = f.remove(b)
	if f.len() != 2 || ids(f) != "a,c" {
		t.Fatalf("after removing b: len %d, %q", f.len(), ids(f))
	}
	n := 0
	for range f.all {
		n++
		break // the iterator stops when asked
	}
	if n != 1 {
		t.Fatalf("break after one: %d yielded", n)
	}
	if f = f.remove(a).remove(c); f.len() != 0 || ids(f) != "" {
		t.Fatalf("after removing all: len %d, %q", f.len(), ids(f))
	}
}
