package relay

// Resume after reconnect: every missed event exactly once, also for a client ahead of this relay and for overlapping filters.

import (
	"context"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// gateHandler is a slog handler that blocks the goroutine that logs a
// message containing match, while armed, until released. The dispatcher logs
// a dropped event before it takes the registry lock, so this holds the relay's
// cursor still while the stream moves on: a deterministic "client ahead of
// this relay" without a second server.
type gateHandler struct {
	match string
	armed atomic.Bool
	hit   chan struct{}
	gate  chan struct{}
	once  sync.Once
}

func newGateHandler(match string) *gateHandler {
	return &gateHandler{match: match, hit: make(chan struct{}, 1), gate: make(chan struct{})}
}

func (h *gateHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *gateHandler) Handle(_ context.Context, r slog.Record) error {
	if h.armed.Load() && strings.Contains(r.Message, h.match) {
		select {
		case h.hit <- struct{}{}:
		default:
		}
		<-h.gate
	}
	return nil
}

func (h *gateHandler) WithAttrs([]slog.Attr) slog.Handler { return h }

func (h *gateHandler) WithGroup(string) slog.Handler { return h }

func (h *gateHandler) release() { h.once.Do(func() { close(h.gate) }) }

// TestResumeAheadOfRelayCursorNoDuplicate: a client whose id comes from a
// relay that was ahead of this one (the id is in the stream, above this
// relay's cursor) gets no reset and nothing twice. The dispatcher is held
// still deterministically: it logs a dropped event (a forged sserelay. event
// name) before it takes the registry lock, and the test's log handler blocks
// that log call until released.
func TestResumeAheadOfRelayCursorNoDuplicate(t *testing.T) {
	gate := newGateHandler("Sse-Event cannot be written safely")
	e := newEnv(t, withConfig(func(c *Config) { c.Logger = slog.New(gate) }))
	t.Cleanup(gate.release) // before the relay shuts down
	defer gate.release()
	tok := token(t, "alice")

	var before []uint64
	for i := range 3 {
		before = append(before, e.publish("sse.demo.alice", "b"+strconv.Itoa(i)))
	}
	e.waitCursor(before[2])
	gate.armed.Store(true)
	e.publish("sse.demo.alice", "forged", HeaderEvent, EventReset)
	select {
	case <-gate.hit:
	case <-time.After(30 * time.Second):
		t.Fatal("the dispatcher never logged the dropped event")
	}
	var held []uint64 // stored, not dispatched yet
	for i := range 6 {
		held = append(held, e.publish("sse.demo.alice.t", "h"+strconv.Itoa(i)))
	}
	if c := e.relay.Cursor(); c != before[2] {
		t.Fatalf("cursor %d, want %d (the dispatcher should be held)", c, before[2])
	}

	open := func(id uint64) *sseStream { return e.resume("app_id=demo", tok, id) }
	ahead := open(held[2])    // from a relay that had dispatched held[2]
	atLast := open(held[5])   // the stream's last sequence
	behind := open(before[0]) // an ordinary resume: (before[0], cursor] from the store
	fresh := e.open("app_id=demo", bearer(tok))
	if ev := fresh.Connected(t); evID(ev) != before[2] {
		t.Fatalf("connected %+v, want id %d (the cursor)", ev, before[2])
	}
	if c := e.relay.Cursor(); c != before[2] {
		t.Fatalf("cursor moved to %d while the sessions opened", c)
	}

	gate.armed.Store(false)
	gate.release()
	e.waitCursor(held[5])
	live := e.publish("sse.demo.alice", "live")
	ahead.ExpectIDs(t, held[3], held[4], held[5], live)
	atLast.ExpectIDs(t, live)
	behind.ExpectIDs(t, append(append([]uint64{before[1], before[2]}, held...), live)...)
	fresh.ExpectIDs(t, append(slices.Clone(held), live)...)
	if n := e.metric(`sserelay_resets_total{reason="unknown-id"}`); n != 0 {
		t.Fatalf("unknown-id resets = %v, want 0", n)
	}
}

// TestResumeOverlappingFiltersNoDuplicate: a filter may name the same topic
// or feed twice, or a topic and one of its subtopics; an event that matches
// it more than once is still one event, live and on resume.
func TestResumeOverlappingFiltersNoDuplicate(t *testing.T) {
	t.Run("ring", func(t *testing.T) { overlapping(t, 0) })
	t.Run("store", func(t *testing.T) { overlapping(t, -1) })
}

func overlapping(t *testing.T, ringEvents int) {
	e := newEnv(t, withConfig(func(c *Config) { c.RingEvents = ringEvents }))
	tok := token(t, "alice")
	subjects := []string{"sse.demo.alice", "sse.demo.alice.t1", "sse.demo.alice.t1.x", "sse.demo.alice.t2", "sse.demo.bob.t1"}
	type stored struct {
		seq  uint64
		subj string
	}
	var evs []stored
	for i := range 20 {
		subj := subjects[i%len(subjects)]
		evs = append(evs, stored{e.publish(subj, "e"+strconv.Itoa(i)), subj})
	}
	e.waitCursor(evs[len(evs)-1].seq)
	match := func(query string) func(string) bool {
		switch {
		case strings.Contains(query, "topic=t1"):
			return func(s string) bool { return strings.HasPrefix(s, "sse.demo.alice.t1") }
		default:
			return func(s string) bool { return strings.HasPrefix(s, "sse.demo.alice") }
		}
	}
	for _, query := range []string{
		"app_id=demo&topic=t1&topic=t1",
		"app_id=demo&topic=t1&topic=t1.x",
		"app_id=demo&feed=alice&feed=alice",
	} {
		t.Run(query, func(t *testing.T) {
			want := func(evs []stored) []uint64 {
				var out []uint64
				for _, ev := range evs {
					if match(query)(ev.subj) {
						out = append(out, ev.seq)
					}
				}
				return out
			}
			// The live stream starts at the cursor: the previous subtest's
			// events must all be dispatched first, including those its
			// filter did not wait for (alice.t2, bob.t1), or the live
			// stream here gets them too.
			e.waitCursor(evs[len(evs)-1].seq)
			h := bearer(tok)
			h.Set("Last-Event-ID", "0")
			resumed := e.open(query, h)
			resumed.Connected(t)
			live := e.open(query, bearer(tok))
			live.Connected(t)
			var more []stored
			for i, subj := range subjects {
				more = append(more, stored{e.publish(subj, "live"+strconv.Itoa(i)), subj})
			}
			t.Run("live", func(t *testing.T) { live.ExpectIDs(t, want(more)...) })
			t.Run("resume", func(t *testing.T) {
				resumed.ExpectIDs(t, append(want(evs), want(more)...)...)
			})
			evs = append(evs, more...)
		})
	}
}
