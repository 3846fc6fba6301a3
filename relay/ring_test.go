package relay

import (
	"fmt"
	"strconv"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestRingPushEvictAndGap(t *testing.T) {
	g := newRing(4, 1<<20)
	for seq := uint64(10); seq < 16; seq++ {
		g.push(ringEntry{seq: seq, data: []byte("x")})
	}
	if g.first() != 12 || g.last() != 15 || g.n != 4 {
		t.Fatalf("after 6 pushes into 4: first %d last %d n %d", g.first(), g.last(), g.n)
	}
	if g.covers(11) || !g.covers(12) || !g.covers(15) || g.covers(16) {
		t.Fatal("covers is wrong at the edges")
	}
	if g.at(14).seq != 14 {
		t.Fatalf("at(14) = %d", g.at(14).seq)
	}
	// A jump in sequences (events the relay never saw) empties the ring.
	g.push(ringEntry{seq: 20})
	if g.first() != 20 || g.n != 1 {
		t.Fatalf("after a gap: first %d n %d", g.first(), g.n)
	}
	// The byte bound evicts too.
	b := newRing(100, 3*(64+10))
	for seq := uint64(1); seq <= 10; seq++ {
		b.push(ringEntry{seq: seq, data: make([]byte, 10)})
	}
	if b.n != 3 || b.first() != 8 {
		t.Fatalf("byte-bounded ring: n %d first %d", b.n, b.first())
	}
	if newRing(-1, 0) != nil || newRing(0, 0) != nil {
		t.Fatal("a ring of no events must be off")
	}
}

// TestResumeAcrossRingAndStore resumes from positions inside the ring,
// before it (store only) and across its start, with a tiny ring, and checks
// the exact ids each time.
func TestResumeAcrossRingAndStore(t *testing.T) {
	for _, ring := range []int{-1, 8, 1000} {
		t.Run(fmt.Sprintf("ring=%d", ring), func(t *testing.T) {
			e := newEnv(t, withConfig(func(c *Config) { c.RingEvents = ring; c.ReplayBatch = 3 }))
			tok := token(t, "alice")
			var mine []uint64
			var last uint64
			for i := range 40 {
				user := "alice"
				if i%3 == 1 {
					user = "bob"
				}
				topic := "t" + strconv.Itoa(i%2)
				last = e.publish("sse.app."+user+"."+topic, "e"+strconv.Itoa(i))
				if user == "alice" && topic == "t1" {
					mine = append(mine, last)
				}
			}
			e.waitCursor(last)
			for _, k := range []int{0, 3, len(mine) - 4, len(mine) - 1} {
				s := e.open("app_id=app&topic=t1&last_event_id="+strconv.FormatUint(mine[k], 10), bearer(tok))
				s.Connected(t)
				s.ExpectIDs(t, mine[k+1:]...)
				next := e.publish("sse.app.alice.t1", "live")
				s.ExpectIDs(t, next)
				mine = append(mine, next)
				s.Close()
			}
			// The ring serves what it holds; without it everything is read from the store.
			store := testutil.ToFloat64(e.relay.metrics.storeReplays)
			if (ring == 1000 && store != 0) || (ring == -1 && store != 4) || (ring == 8 && store == 0) {
				t.Fatalf("ring %d: %v resumes read the store", ring, store)
			}
		})
	}
}

func TestRingLinkedWalk(t *testing.T) {
	g := newRing(64, 1<<20)
	keys := []string{"app.a", "app.b", "app.c"}
	for seq := uint64(1); seq <= 60; seq++ {
		e := ringEntry{seq: seq, key: keys[seq%3], topic: "t" + strconv.Itoa(int(seq%2))}
		if seq == 31 {
			e.connID, e.connUser = "conn-123456", "alice"
		}
		if seq == 40 {
			e.bad = true
		}
		g.push(e)
	}
	f := &replayFilter{keys: []string{"app.a", "app.b"}, excludeConn: "conn-123456", user: "alice"}
	evs, ok := g.linked(f, 20, 50)
	if !ok {
		t.Fatal("linked walk refused a covered range")
	}
	var got []uint64
	for _, ev := range evs {
		got = append(got, ev.seq)
	}
	var want []uint64
	for seq := uint64(20); seq <= 50; seq++ {
		if k := keys[seq%3]; (k == "app.a" || k == "app.b") && seq != 31 && seq != 40 {
			want = append(want, seq)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("linked(20, 50) = %v, want %v", got, want)
	}
	// Topics narrow the walk too.
	f = &replayFilter{keys: []string{"app.c"}, topics: []string{"t1"}}
	evs, _ = g.linked(f, 1, 60)
	for _, ev := range evs {
		if ev.seq%3 != 2 || ev.seq%2 != 1 {
			t.Fatalf("linked with topic t1 returned %d", ev.seq)
		}
	}
	if len(evs) != 10 {
		t.Fatalf("linked with topic t1 returned %d events, want 10", len(evs))
	}
	// Evicting a feed's newest entry forgets the feed.
	for seq := uint64(61); seq <= 200; seq++ {
		g.push(ringEntry{seq: seq, key: "app.z"})
	}
	if len(g.lastByKey) != 1 {
		t.Fatalf("lastByKey holds %d feeds after eviction, want 1", len(g.lastByKey))
	}
	// A position the ring no longer holds: the caller falls back to the store.
	if _, ok := g.linked(f, 2, 200); ok {
		t.Fatal("linked accepted a position the ring does not hold")
	}
}

func TestRingGrowsInOrder(t *testing.T) {
	g := newRing(5000, 1<<30)
	if len(g.buf) != 1024 {
		t.Fatalf("initial size %d, want 1024", len(g.buf))
	}
	for seq := uint64(1); seq <= 12000; seq++ {
		g.push(ringEntry{seq: seq, key: "k"})
		if g.n > 0 && g.at(g.last()).seq != seq {
			t.Fatalf("after push %d the newest entry is %d", seq, g.at(g.last()).seq)
		}
	}
	if len(g.buf) != 5000 || g.n != 5000 || g.first() != 7001 {
		t.Fatalf("size %d, n %d, first %d; want 5000, 5000, 7001", len(g.buf), g.n, g.first())
	}
	for seq := g.first(); seq <= g.last(); seq++ {
		if g.at(seq).seq != seq {
			t.Fatalf("at(%d) = %d", seq, g.at(seq).seq)
		}
	}
	evs, ok := g.linked(&replayFilter{keys: []string{"k"}}, 11000, 11999)
	if !ok || len(evs) != 1000 || evs[0].seq != 11000 || evs[999].seq != 11999 {
		t.Fatalf("linked walk after growth: ok %v, %d events", ok, len(evs))
	}
}
