package relay

// Long store reads through a short-lived consumer (storeconsumer.go).

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// consumerHistory stores n events before the relay starts: alice's feed
// gets 1,500 on sse.demo.alice, 300 on topic x and 60 on topic x.y; bob the
// rest. It returns each event's subject by sequence.
func consumerHistory(t *testing.T, e *testEnv, n int, subjects map[uint64]string) {
	subj := func(i int) string {
		switch {
		case i%2 == 0:
			return "sse.demo.alice"
		case i%10 == 1:
			return "sse.demo.alice.x"
		case i%50 == 3:
			return "sse.demo.alice.x.y"
		default:
			return "sse.demo.bob"
		}
	}
	seqs := e.publishFast(t, n, func(i int) *nats.Msg { return msg(subj(i), "e"+strconv.Itoa(i)) })
	for i, seq := range seqs {
		subjects[seq] = subj(i)
	}
}

// replayConsumers returns the names of the stream's replay consumers.
func replayConsumers(t *testing.T, e *testEnv) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := e.js.Stream(ctx, "SSE")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	l := s.ConsumerNames(ctx)
	for name := range l.Name() {
		if strings.HasPrefix(name, replayConsumerPrefix) {
			names = append(names, name)
		}
	}
	if err := l.Err(); err != nil {
		t.Fatal(err)
	}
	return names
}

// TestReplayConsumer: a catch-up that finds more than ReplayConsumerMin
// events of a subject pending reads them through a short-lived consumer,
// and delivers exactly what Direct Get delivers (the "direct" run, with
// the consumer off): every event of the filter after Last-Event-ID once, in
// order, with live events published during the read after them. Across the
// threshold (topic x above it, x.y below, merged) and with overlapping
// filters (x.y's events match both x.> and x.y). The consumers are deleted
// afterwards.
func TestReplayConsumer(t *testing.T) {
	for _, tc := range []struct {
		name string
		min  int
	}{{"consumer", 100}, {"direct", -1}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			subjects := map[uint64]string{}
			e := newEnv(t,
				withConfig(func(c *Config) {
					c.RingEvents = -1
					c.ReplayBatch = 64 // many pull requests
					c.ReplayConsumerMin = tc.min
				}),
				withHistory(func(e *testEnv) { consumerHistory(t, e, 3000, subjects) }))
			var last uint64
			for seq := range subjects {
				last = max(last, seq)
			}
			e.waitCursor(last)
			tok := token(t, "alice")
			type session struct {
				query string
				from  uint64
				match func(subject string) bool
			}
			sessions := []session{
				{"app_id=demo", 0, func(s string) bool { return strings.HasPrefix(s, "sse.demo.alice") }},
				{"app_id=demo", last - 1000, func(s string) bool { return strings.HasPrefix(s, "sse.demo.alice") }},
				{"app_id=demo&topic=x&topic=x.y", 0, func(s string) bool { return strings.HasPrefix(s, "sse.demo.alice.x") }},
			}
			for _, ss := range sessions {
				h := bearer(tok)
				h.Set("Last-Event-ID", strconv.FormatUint(ss.from, 10))
				s := e.open(ss.query, h)
				s.Connected(t)
				var want []uint64
				for seq := ss.from + 1; seq <= last; seq++ {
					if ss.match(subjects[seq]) {
						want = append(want, seq)
					}
				}
				// Live events, published while the catch-up reads: each
				// once, after the stored ones.
				for i := range 20 {
					subj := "sse.demo.alice.x"
					if i%2 == 0 {
						subj = "sse.demo.bob"
					}
					seq := e.publish(subj, "live")
					subjects[seq] = subj
					if ss.match(subj) {
						want = append(want, seq)
					}
					last = seq
				}
				s.ExpectIDs(t, want...)
				s.Close()
			}
			viaConsumer := e.metric(`sserelay_replays_total{source="consumer"}`)
			if tc.min < 0 {
				if viaConsumer != 0 || e.metric(`sserelay_replays_total{source="store"}`) != float64(len(sessions)) {
					t.Fatalf("with the consumer off: %v catch-ups through a consumer, %v with Direct Get, want 0 and %d",
						viaConsumer, e.metric(`sserelay_replays_total{source="store"}`), len(sessions))
				}
				return
			}
			if viaConsumer != float64(len(sessions)) {
				t.Fatalf("%v of %d catch-ups read through a consumer", viaConsumer, len(sessions))
			}
			if n := e.metric("sserelay_replay_consumer_fallbacks_total"); n != 0 {
				t.Fatalf("%v fallbacks to Direct Get", n)
			}
			eventually(t, waitLong, "the replay consumers to be deleted", func() bool { return len(replayConsumers(t, e)) == 0 })
		})
	}
}

// TestReplayConsumerShortStaysDirect: a catch-up below the threshold reads
// with Direct Get only and creates no consumer.
func TestReplayConsumerShortStaysDirect(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *Config) {
		c.RingEvents = -1
		c.ReplayConsumerMin = 100
	}))
	seqs := e.publishFast(t, 100, func(i int) *nats.Msg { return msg("sse.demo.alice", "e"+strconv.Itoa(i)) })
	e.waitCursor(seqs[len(seqs)-1])
	h := bearer(token(t, "alice"))
	h.Set("Last-Event-ID", "0")
	s := e.open("app_id=demo", h)
	s.Connected(t)
	s.ExpectIDs(t, seqs...)
	if n, d := e.metric(`sserelay_replays_total{source="consumer"}`), e.metric(`sserelay_replays_total{source="store"}`); n != 0 || d != 1 {
		t.Fatalf("100 events with ReplayConsumerMin 100: %v catch-ups through a consumer, %v with Direct Get; want 0 and 1", n, d)
	}
}

// TestReplayConsumerFallback: when the consumer cannot be created (the
// stream's consumer limit), or is deleted in the middle of the read, the
// catch-up goes on with Direct Get from where it was, and misses nothing.
func TestReplayConsumerFallback(t *testing.T) {
	t.Run("limit", func(t *testing.T) {
		t.Parallel()
		subjects := map[uint64]string{}
		e := newEnv(t,
			withConfig(func(c *Config) { c.RingEvents, c.ReplayConsumerMin = -1, 100 }),
			withHistory(func(e *testEnv) {
				consumerHistory(t, e, 1000, subjects)
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				s, err := e.js.Stream(ctx, "SSE")
				if err != nil {
					t.Fatal(err)
				}
				cfg := s.CachedInfo().Config
				cfg.MaxConsumers = 1 // the relay's own
				if _, err := e.js.UpdateStream(ctx, cfg); err != nil {
					t.Fatal(err)
				}
			}))
		var want []uint64
		var last uint64
		for seq, subj := range subjects {
			last = max(last, seq)
			if strings.HasPrefix(subj, "sse.demo.alice") {
				want = append(want, seq)
			}
		}
		slices.Sort(want)
		e.waitCursor(last)
		h := bearer(token(t, "alice"))
		h.Set("Last-Event-ID", "0")
		s := e.open("app_id=demo", h)
		s.Connected(t)
		s.ExpectIDs(t, want...)
		if n := e.metric("sserelay_replay_consumer_fallbacks_total"); n < 1 {
			t.Fatalf("%v fallbacks, want at least 1", n)
		}
		if n := e.metric(`sserelay_replays_total{source="store"}`); n != 1 {
			t.Fatalf("%v catch-ups with Direct Get, want 1", n)
		}
	})
	t.Run("deleted", func(t *testing.T) {
		t.Parallel()
		pad := strings.Repeat("p", 500)
		e := newEnv(t, withConfig(func(c *Config) {
			c.RingEvents, c.ReplayConsumerMin, c.ReplayBatch = -1, 100, 64
			c.WriteTimeout = time.Minute
		}))
		seqs := e.publishFast(t, 20000, func(i int) *nats.Msg { return msg("sse.demo.alice", pad+strconv.Itoa(i)) })
		e.waitCursor(seqs[len(seqs)-1])
		h := bearer(token(t, "alice"))
		h.Set("Last-Event-ID", "0")
		s := e.openRaw(t, "app_id=demo", h, 64<<10) // holds still: the read waits on the socket
		var name string
		eventually(t, waitLong, "a replay consumer", func() bool {
			names := replayConsumers(t, e)
			if len(names) == 1 {
				name = names[0]
			}
			return name != ""
		})
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := e.js.DeleteConsumer(ctx, "SSE", name); err != nil && err != jetstream.ErrConsumerNotFound {
			t.Fatal(err)
		}
		s.Connected(t)
		s.ExpectIDs(t, seqs...)
		if n := e.metric("sserelay_replay_consumer_fallbacks_total"); n != 1 {
			t.Fatalf("%v fallbacks, want 1", n)
		}
	})
}

// TestReplayConsumerCluster: on an R3 stream the replay consumer (R1, on any
// replica) reads as exactly as Direct Get, and the rest of the range after
// it is checked with Direct Get.
func TestReplayConsumerCluster(t *testing.T) {
	c := newTestCluster(t, 3)
	e := newR3Env(t, c, c.urls())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	subjects := map[uint64]string{}
	consumerHistory(t, e, 3000, subjects)
	e.startRelay(ctx, Config{Verifier: mustVerifier(t), Logger: testLogger(t), Keepalive: time.Hour,
		RingEvents: -1, ReplayBatch: 64, ReplayConsumerMin: 100})
	var want []uint64
	for seq, subj := range subjects {
		if strings.HasPrefix(subj, "sse.demo.alice") {
			want = append(want, seq)
		}
	}
	slices.Sort(want)
	h := bearer(token(t, "alice"))
	h.Set("Last-Event-ID", "0")
	s := e.open("app_id=demo", h)
	s.Connected(t)
	s.ExpectIDs(t, want...)
	if n := e.metric(`sserelay_replays_total{source="consumer"}`); n != 1 {
		t.Fatalf("%v catch-ups through a consumer, want 1 (fallbacks: %v)", n, e.metric("sserelay_replay_consumer_fallbacks_total"))
	}
}

// TestReplayConsumersBounded: the relay holds at most ReplayConsumers
// short-lived consumers at once, whatever the number of long catch-ups: they
// count against the stream's consumer limit, which every relay on the
// stream shares with its live consumer. The catch-ups that find them all
// taken read with Direct Get, and every one delivers exactly its events.
func TestReplayConsumersBounded(t *testing.T) {
	t.Parallel()
	pad := strings.Repeat("p", 1000)
	users := []string{"alice", "bob", "carol"}
	e := newEnv(t, withConfig(func(c *Config) {
		c.RingEvents, c.ReplayConsumerMin, c.ReplayBatch = -1, 100, 64
		c.ReplayConsumers = 1
		c.WriteTimeout = time.Minute
	}))
	seqs := e.publishFast(t, 24000, func(i int) *nats.Msg {
		return msg("sse.demo."+users[i%len(users)], pad+strconv.Itoa(i))
	})
	e.waitCursor(seqs[len(seqs)-1])
	var streams []*sseStream
	for _, u := range users {
		h := bearer(token(t, u))
		h.Set("Last-Event-ID", "0")
		// Each holds still (8 MB to send, 64 KiB of receive buffer): its
		// catch-up keeps whatever it reads through until it is read.
		streams = append(streams, e.openRaw(t, "app_id=demo", h, 64<<10))
	}
	eventually(t, waitLong, "three catch-ups past their first store batch", func() bool {
		return e.metric("sserelay_replays_active") == 3 &&
			e.metric("sserelay_replay_consumers")+e.metric("sserelay_replay_consumers_busy_total") >= 3
	})
	if names := replayConsumers(t, e); len(names) != 1 {
		t.Fatalf("three long catch-ups at once hold %d replay consumers (%v), want ReplayConsumers = 1", len(names), names)
	}
	if n := e.metric("sserelay_replay_consumers"); n != 1 {
		t.Fatalf("sserelay_replay_consumers is %v during the catch-ups, want 1", n)
	}
	for i, s := range streams {
		s.Connected(t)
		var want []uint64
		for j, seq := range seqs {
			if j%len(users) == i {
				want = append(want, seq)
			}
		}
		s.ExpectIDs(t, want...)
	}
	if n := e.metric(`sserelay_replays_total{source="consumer"}`); n != 1 {
		t.Fatalf("%v catch-ups read through a consumer, want 1", n)
	}
	if n := e.metric("sserelay_replay_consumer_fallbacks_total"); n != 0 {
		t.Fatalf("%v fallbacks: a taken consumer is not a failure", n)
	}
	eventually(t, waitLong, "the replay consumer to be given back and deleted", func() bool {
		return e.metric("sserelay_replay_consumers") == 0 && len(replayConsumers(t, e)) == 0
	})
}
