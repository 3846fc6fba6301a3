package relay

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// TestWriteTimeoutClosesStalledClient: a client that reads nothing is closed
// once a write has waited WriteTimeout, and another client is unaffected.
func TestWriteTimeoutClosesStalledClient(t *testing.T) {
	e := newEnv(t, withConfig(func(c *Config) {
		c.WriteTimeout = 300 * time.Millisecond
		c.QueueEvents = 1 << 20 // no overflow: the writer itself must block
		c.QueueBytes = 1 << 30
	}))
	stalled := e.openRaw(t, "app_id=demo", bearer(token(t, "alice")), smallRcvBuf)
	if _, err := stalled.ReadUntil(10*time.Second, func(sseEvent) bool { return true }); err != nil {
		t.Fatal(err)
	}
	bob := e.open("app_id=demo", bearer(token(t, "bob")))
	bob.Connected(t)
	big := strings.Repeat("x", 64<<10)
	var last uint64
	for range 100 { // 6.4 MB: far beyond what the socket buffers hold
		last = e.publish("sse.demo.alice", big)
	}
	e.waitCursor(last)
	e.waitOpen(1) // the stalled stream closed
	seq := e.publish("sse.demo.bob", "still here")
	bob.ExpectIDs(t, seq)
}

// TestShutdownAbortsStalledStream: a client that stopped reading holds its
// writer in a blocked write; Shutdown with a deadline closes its connection
// so that the stream's goroutines end (goleak checks that they did).
func TestShutdownAbortsStalledStream(t *testing.T) {
	e := newEnv(t, withConfig(func(c *Config) {
		c.WriteTimeout = time.Hour
		c.QueueEvents = 1 << 20
		c.QueueBytes = 1 << 30
	}))
	stalled := e.openRaw(t, "app_id=demo", bearer(token(t, "alice")), smallRcvBuf)
	if _, err := stalled.ReadUntil(10*time.Second, func(sseEvent) bool { return true }); err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("x", 64<<10)
	var last uint64
	for range 100 {
		last = e.publish("sse.demo.alice", big)
	}
	e.waitCursor(last)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := e.relay.Shutdown(ctx); err == nil {
		t.Fatal("Shutdown reported a clean drain while a writer was blocked")
	}
	e.waitOpen(0)
}

// TestSlowReaderResumesExactlyOnce: a client that stops reading overflows its
// queue of 8 events; the relay drops the queue and catches it up from the
// store, so that it still gets every event exactly once, in order, while
// another user's stream is not held up.
func TestSlowReaderResumesExactlyOnce(t *testing.T) {
	t.Run("ring", func(t *testing.T) { slowReader(t, 0) })
	t.Run("store", func(t *testing.T) { slowReader(t, -1) })
}

func slowReader(t *testing.T, ringEvents int) {
	const aliceN, bobN = 2000, 200
	e := newEnv(t, withConfig(func(c *Config) {
		c.QueueEvents = 8
		c.RingEvents = ringEvents
		c.WriteTimeout = 2 * time.Minute // the stalled client must not be cut off
	}))
	js := asyncJS(t, e.pub)

	// alice's client: a small receive buffer that it does not read; 2,000
	// events of 4 KB are far more than the socket buffers hold, so the
	// relay's writer blocks and the dispatcher overflows her queue.
	alice := e.openRaw(t, "app_id=demo", bearer(token(t, "alice")), smallRcvBuf)
	if hello, err := alice.ReadUntil(10*time.Second, func(sseEvent) bool { return true }); err != nil || hello[0].Event != EventConnected {
		t.Fatalf("alice connected: %v %v", hello, err)
	}
	bob := e.open("app_id=demo", bearer(token(t, "bob")))
	bob.Connected(t)
	type result struct {
		evs []sseEvent
		err error
	}
	bobDone := make(chan result, 1)
	go func() {
		n := 0
		evs, err := bob.ReadUntil(2*time.Minute, func(sseEvent) bool { n++; return n == bobN })
		bobDone <- result{evs, err}
	}()

	pad := strings.Repeat("x", 4000)
	isBob := func(i int) bool { return i%11 == 10 } // 200 of 2,200
	seqs := publishN(t, js, aliceN+bobN, func(i int) *nats.Msg {
		if isBob(i) {
			return msg("sse.demo.bob", "b"+strconv.Itoa(i))
		}
		return msg("sse.demo.alice", "a"+strconv.Itoa(i)+":"+pad)
	})
	var aliceSeqs, bobSeqs []uint64
	var aliceData []string
	for i, seq := range seqs {
		if isBob(i) {
			bobSeqs = append(bobSeqs, seq)
		} else {
			aliceSeqs = append(aliceSeqs, seq)
			aliceData = append(aliceData, "a"+strconv.Itoa(i)+":"+pad)
		}
	}

	// bob gets everything while alice has still read nothing.
	res := <-bobDone
	if res.err != nil {
		t.Fatalf("bob: %v", res.err)
	}
	var got []uint64
	for _, ev := range res.evs {
		got = append(got, evID(ev))
	}
	if !slices.Equal(got, bobSeqs) {
		t.Fatalf("bob, while alice stalls: %s", diffIDs(got, bobSeqs))
	}

	// Now alice reads: every event exactly once, in order.
	last := aliceSeqs[len(aliceSeqs)-1]
	evs, err := alice.ReadUntil(2*time.Minute, func(ev sseEvent) bool { return evID(ev) >= last })
	got = got[:0]
	for _, ev := range evs {
		got = append(got, evID(ev))
	}
	if err != nil {
		t.Fatalf("alice: %v (ids so far: %s)", err, diffIDs(got, aliceSeqs))
	}
	if !slices.Equal(got, aliceSeqs) {
		t.Fatalf("alice: %s", diffIDs(got, aliceSeqs))
	}
	for i, ev := range evs {
		if ev.Event != "" || ev.Data != aliceData[i] {
			t.Fatalf("event %d (id %s): event %q, data %.20q, want %.20q", i, ev.ID, ev.Event, ev.Data, aliceData[i])
		}
	}
	if n := e.metric("sserelay_queue_overflows_total"); n < 1 {
		t.Fatalf("sserelay_queue_overflows_total = %v: alice's queue never overflowed, the test proved nothing", n)
	}
	t.Logf("overflows %v, replays %v", e.metric("sserelay_queue_overflows_total"), e.metric("sserelay_replays_total"))
}
