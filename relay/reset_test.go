package relay

// Resets: history gone, unknown ids.

import (
	"context"
	"strconv"
	"testing"
	"time"
)

// TestHistoryGoneReset: a client whose next event has been trimmed gets
// sserelay.reset history-gone with id = the cursor, then the live stream;
// one whose next event is the stream's first gets everything, no reset.
// "store": the relay's in-memory ring off, every resume reads the store.
// "ring": the default config, whose ring still holds the trimmed events;
// "ring-after-purge": the stream was purged, the ring still holds the events.
func TestHistoryGoneReset(t *testing.T) {
	t.Run("store", func(t *testing.T) { historyGone(t, -1, false) })
	t.Run("ring", func(t *testing.T) { historyGone(t, 0, false) })
	t.Run("ring-after-purge", func(t *testing.T) { historyGone(t, 0, true) })
}

func historyGone(t *testing.T, ringEvents int, purge bool) {
	e := newEnv(t, withStream(func(o *StreamOptions) { o.MaxMsgs = 10 }), withConfig(func(c *Config) { c.RingEvents = ringEvents }))
	tok := token(t, "alice")
	var seqs []uint64
	for i := range 30 {
		seqs = append(seqs, e.publish("sse.demo.alice", "e"+strconv.Itoa(i)))
	}
	last := seqs[29]
	e.waitCursor(last)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := e.js.Stream(ctx, "SSE")
	if err != nil {
		t.Fatal(err)
	}
	if purge {
		if err := stream.Purge(ctx); err != nil {
			t.Fatal(err)
		}
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	first := info.State.FirstSeq
	resume := func(id uint64) *sseStream { return e.resume("app_id=demo", tok, id) }
	expectGone := func(s *sseStream, id uint64) {
		t.Helper()
		ev := s.MustNext(t)
		if ev.Event != EventReset {
			t.Fatalf("BUG: Last-Event-ID %d: event %d is no longer in the stream (first sequence %d), yet the relay sent %+v "+
				"instead of sserelay.reset history-gone: it replays from its in-memory ring events that the stream's retention "+
				"(or a purge) has removed; the contract (README, Resume): E+1 < FirstSeq means history-gone", id, id+1, first, ev)
		}
		expectReset(t, ev, ResetHistoryGone, last)
	}

	// Last-Event-ID 2: events 3..20 are gone.
	s := resume(seqs[1])
	expectGone(s, seqs[1])
	var streams []*sseStream
	if purge {
		streams = []*sseStream{s}
	} else {
		// The edge: the stream keeps seqs[20:], and the client needs exactly those.
		edge := resume(seqs[19])
		edge.ExpectIDs(t, seqs[20:]...)
		// One before the edge: seqs[19] is needed but gone.
		gone := resume(seqs[18])
		expectGone(gone, seqs[18])
		streams = []*sseStream{s, edge, gone}
	}

	// The live stream follows the reset, nothing twice.
	live := e.publish("sse.demo.alice", "live")
	e.publish("sse.demo.bob", "not alice's")
	live2 := e.publish("sse.demo.alice.t", "live 2")
	e.waitCursor(live2)
	for _, st := range streams {
		st.ExpectIDs(t, live, live2)
	}
	// A reconnect with the reset's id resumes from the live point.
	again := resume(last)
	again.ExpectIDs(t, live, live2)

	wantResets := 2.0 // s and gone
	if purge {
		wantResets = 1
	}
	if n := e.metric(`sserelay_resets_total{reason="history-gone"}`); n != wantResets {
		t.Fatalf("history-gone resets = %v, want %v", n, wantResets)
	}
}

func TestUnknownIDReset(t *testing.T) {
	e := newEnv(t)
	tok := token(t, "alice")
	var last uint64
	for i := range 5 {
		last = e.publish("sse.demo.alice", "e"+strconv.Itoa(i))
	}
	e.waitCursor(last)
	var streams []*sseStream
	for _, id := range []uint64{last + 1, last + 1_000_000, 1<<63 + 5} {
		s := e.resume("app_id=demo", tok, id)
		expectReset(t, s.MustNext(t), ResetUnknownID, last)
		streams = append(streams, s)
	}
	// The query parameter works the same way.
	q := e.open("app_id=demo&last_event_id="+strconv.FormatUint(last+77, 10), bearer(tok))
	q.Connected(t)
	expectReset(t, q.MustNext(t), ResetUnknownID, last)
	streams = append(streams, q)

	live := e.publish("sse.demo.alice", "live")
	for _, s := range streams {
		s.ExpectIDs(t, live)
	}
	if n := e.metric(`sserelay_resets_total{reason="unknown-id"}`); n != 4 {
		t.Fatalf("unknown-id resets = %v, want 4", n)
	}
	if n := e.metric(`sserelay_resets_total{reason="history-gone"}`); n != 0 {
		t.Fatalf("history-gone resets = %v, want 0", n)
	}
}
