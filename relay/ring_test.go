package relay

import (
	"fmt"
	"strconv"
	"testing"
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
			store := e.relay.metrics.storeReplays.Load()
			if (ring == 1000 && store != 0) || (ring == -1 && store != 4) || (ring == 8 && store == 0) {
				t.Fatalf("ring %d: %d resumes read the store", ring, store)
			}
		})
	}
}
