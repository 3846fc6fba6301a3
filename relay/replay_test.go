package relay

// Large replays, replay slots and store reads.

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// TestReplay100kStreamsInOrder: 100,000 missed events of one user, among
// 20,000 of others, stream out completely and in order; and the relay reads
// the store only as fast as the client takes the events: while the client
// holds still after the first event, the relay has read a bounded part of
// the range, not all of it.
func TestReplay100kStreamsInOrder(t *testing.T) {
	const aliceN, otherN = 100_000, 20_000
	pad := strings.Repeat("p", 150)
	isAlice := func(i int) bool { return i%6 != 5 }
	aliceData := func(i int) string { return "a" + strconv.Itoa(i) + " " + pad }
	var seqs []uint64
	e := newEnv(t,
		withConfig(func(c *Config) {
			c.ReplayBatch = 256
			c.RingEvents = -1 // the store path; the ring only holds what this relay dispatched anyway
			c.WriteTimeout = 2 * time.Minute
		}),
		// Stored before the relay starts: it resumes them from the store
		// without having dispatched them.
		withHistory(func(e *testEnv) {
			seqs = e.publishFast(t, aliceN+otherN, func(i int) *nats.Msg {
				switch {
				case !isAlice(i):
					return msg("sse.demo.o"+strconv.Itoa(i%50), "o")
				case i%4 < 2: // alice's events on two subjects: the replay merges two store cursors
					return msg("sse.demo.alice", aliceData(i))
				default:
					return msg("sse.demo.alice.x", aliceData(i))
				}
			})
		}))
	var want []uint64
	var wantIdx []int
	for i, seq := range seqs {
		if isAlice(i) {
			want = append(want, seq)
			wantIdx = append(wantIdx, i)
		}
	}
	if len(want) != aliceN {
		t.Fatalf("%d events for alice, want %d", len(want), aliceN)
	}

	storeMsgs := func() uint64 { return e.nc.Stats().InMsgs } // the relay's connection: Direct Get replies
	before := storeMsgs()
	h := bearer(token(t, "alice"))
	h.Set("Last-Event-ID", "0")
	s := e.openRaw(t, "app_id=demo", h, smallRcvBuf)
	first, err := s.ReadUntil(30*time.Second, func(ev sseEvent) bool { return ev.Event != EventConnected })
	if err != nil || first[0].Event != EventConnected || evID(first[1]) != want[0] {
		t.Fatalf("first events %+v: %v", first, err)
	}

	// Hold still until the relay stops reading the store (its writer is
	// blocked on the full socket).
	// The consumer's heartbeats (one a second) arrive on the same
	// connection: a second with at most a few messages is still.
	last := storeMsgs()
	for deadline := time.Now().Add(60 * time.Second); ; {
		if time.Now().After(deadline) {
			t.Fatalf("the relay kept reading the store for a minute while the client held still")
		}
		time.Sleep(time.Second)
		n := storeMsgs()
		if n-last <= 3 {
			break
		}
		last = n
	}
	// A relay that held the range would have read all of it (at least aliceN
	// replies). Streaming, it has read what the sockets hold (about 4.5 MB,
	// 25,000 events here) and a batch; twice that while the replies are
	// delivered twice (see TestReplayReadsStoreOnce).
	held := last - before
	t.Logf("client holding after the first event: %d replies from the store for %d missed events", held, aliceN)
	if held >= aliceN {
		t.Errorf("the relay read %d replies from the store for %d events while the client held still after the first: it holds the range instead of streaming it", held, aliceN)
	}

	for i := 1; i < len(want); i++ {
		ev, err := s.Next(2 * time.Minute)
		if err != nil {
			t.Fatalf("after %d of %d events: %v", i, len(want), err)
		}
		if ev.Event != "" || evID(ev) != want[i] || ev.Data != aliceData(wantIdx[i]) {
			t.Fatalf("event %d: got id %s event %q data %.20q, want id %d", i, ev.ID, ev.Event, ev.Data, want[i])
		}
	}
	if n := e.metric("sserelay_events_replayed_total"); n != aliceN {
		t.Fatalf("sserelay_events_replayed_total = %v, want %d", n, aliceN)
	}
}

// TestReplayMaxReplaysOneAllComplete: with one replay slot, 20 sessions that
// resume at once wait their turn; none is lost, and live events published
// meanwhile arrive after each one's replay, exactly once.
func TestReplayMaxReplaysOneAllComplete(t *testing.T) {
	const users, per, sessions = 10, 300, 20
	e := newEnv(t, withConfig(func(c *Config) {
		c.MaxReplays = 1
		c.ReplayBatch = 16
		c.RingEvents = -1 // store reads: slow enough that the sessions really queue
	}))
	js := asyncJS(t, e.pub)
	user := func(i int) string { return "u" + strconv.Itoa(i%users) }
	seqs := publishN(t, js, users*per, func(i int) *nats.Msg {
		return msg("sse.demo."+user(i)+".t"+strconv.Itoa(i%3), "e"+strconv.Itoa(i))
	})
	e.waitCursor(seqs[len(seqs)-1])
	byUser := map[string][]uint64{}
	for i, seq := range seqs {
		byUser[user(i)] = append(byUser[user(i)], seq)
	}

	type sess struct {
		user string
		from uint64
		s    *sseStream
	}
	var all []*sess
	for i := range sessions {
		u := user(i)
		from := uint64(0)
		if i >= users {
			from = byUser[u][per/2] // the second session of each user resumes half way
		}
		h := bearer(token(t, u))
		h.Set("Last-Event-ID", strconv.FormatUint(from, 10))
		st := e.open("app_id=demo", h) // connected is written before the session waits for the slot
		st.Connected(t)
		all = append(all, &sess{u, from, st})
	}
	// Live events while the sessions queue for the slot.
	live := publishN(t, js, 2*users, func(i int) *nats.Msg {
		return msg("sse.demo."+user(i)+".live", "live"+strconv.Itoa(i))
	})
	for i, seq := range live {
		byUser[user(i)] = append(byUser[user(i)], seq)
	}

	errs := make([]error, len(all))
	var wg sync.WaitGroup
	for k, ss := range all {
		wg.Go(func() {
			var want []uint64
			for _, seq := range byUser[ss.user] {
				if seq > ss.from {
					want = append(want, seq)
				}
			}
			stop := want[len(want)-1]
			evs, err := ss.s.ReadUntil(time.Minute, func(ev sseEvent) bool { return evID(ev) >= stop })
			if err != nil {
				errs[k] = err
				return
			}
			var got []uint64
			for _, ev := range evs {
				got = append(got, evID(ev))
			}
			if !slices.Equal(got, want) {
				errs[k] = fmt.Errorf("%s from %d: %s", ss.user, ss.from, diffIDs(got, want))
			}
		})
	}
	wg.Wait()
	for k, err := range errs {
		if err != nil {
			t.Errorf("session %d: %v", k, err)
		}
	}
	if n := e.metric("sserelay_replays_total"); n != sessions {
		t.Errorf("sserelay_replays_total = %v, want %d", n, sessions)
	}
}

// TestReplayReadsStoreOnce: a resume reads each stored event from NATS once.
// The relay's replay inbox must not also match its connection's request
// wildcard (_INBOX.<conn>.*, created by the first JetStream API call), or the
// server sends every Direct Get reply twice and the client library drops the
// second copy: twice the bytes and work on every resume.
func TestReplayReadsStoreOnce(t *testing.T) {
	const n, batch = 2000, 100
	e := newEnv(t, withConfig(func(c *Config) {
		c.ReplayBatch = batch
		c.RingEvents = -1
	}))
	seqs := e.publishFast(t, n, func(i int) *nats.Msg { return msg("sse.demo.alice", "e"+strconv.Itoa(i)) })
	e.waitCursor(seqs[n-1])
	before := e.nc.Stats().InMsgs
	h := bearer(token(t, "alice"))
	h.Set("Last-Event-ID", "0")
	s := e.open("app_id=demo", h)
	s.Connected(t)
	s.ExpectIDs(t, seqs...)
	got := e.nc.Stats().InMsgs - before
	// Two subject cursors (alice, alice.>), one end-of-batch message per
	// batch, two existence checks, and a little slack for heartbeats.
	limit := uint64(n + 2*(n/batch+2) + 2 + 10)
	t.Logf("%d events replayed with %d messages received by the relay's connection", n, got)
	if got > limit {
		t.Fatalf("BUG: the relay's connection received %d messages to replay %d events (at most %d expected): "+
			"Direct Get replies arrive twice (replay.go uses NewRespInbox, which the connection's request wildcard subscription also matches)", got, n, limit)
	}
}

// TestReplayPastBatchOfUndecodable: a store batch in which every event is
// dropped (undecodable header blocks) is not the end of the range: the
// events after it are still replayed.
func TestReplayPastBatchOfUndecodable(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *Config) {
		c.RingEvents = -1 // resumes read the store
		c.ReplayBatch = 2
	}))
	tok := token(t, "alice")
	first := e.publish("sse.demo.alice", "first")
	for range 5 { // more than two batches of nothing
		e.rawHPub("sse.demo.alice", "no colon here\r\n", "broken")
	}
	last := e.publish("sse.demo.alice", "last")
	e.waitCursor(last)
	r := e.open("app_id=demo&last_event_id=0", bearer(tok))
	r.Connected(t)
	r.ExpectNext(t, first, "", "first")
	r.ExpectNext(t, last, "", "last")
}
