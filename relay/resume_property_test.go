package relay

// TestResumeProperty, in three parts: the workload (a publisher and 1,500
// sessions of six kinds against a stream that trims from the front), the
// oracle (from the record of every acknowledged sequence, the ids each
// session must get) and the checker (what each session got against it).

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// openedCounter is a slog handler that counts "stream opened" records whose
// Last-Event-ID was ahead of the relay's cursor at registration.
type openedCounter struct{ ahead atomic.Int64 }

func (h *openedCounter) Enabled(context.Context, slog.Level) bool { return true }

func (h *openedCounter) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "stream opened" {
		return nil
	}
	var hasID bool
	var last, cursor uint64
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "has_id":
			hasID = a.Value.Bool()
		case "last_event_id":
			last = a.Value.Uint64()
		case "cursor":
			cursor = a.Value.Uint64()
		}
		return true
	})
	if hasID && last > cursor {
		h.ahead.Add(1)
	}
	return nil
}

func (h *openedCounter) WithAttrs([]slog.Attr) slog.Handler { return h }

func (h *openedCounter) WithGroup(string) slog.Handler { return h }

// TestResumeProperty: every session, whatever its Last-Event-ID (none, old,
// at the trimming edge, at the edge of the ring, recent, ahead of the
// relay's cursor) and filter, gets exactly the events of its filter after
// its id, in order, or a justified history-gone reset and then exactly the
// events after it.
func TestResumeProperty(t *testing.T) { testResumeProperty(t, -1) }

// TestResumePropertyConsumer: the same through the short-lived consumers of
// long store reads (any subject with more than one event left after its
// first batch), trims in the middle of a read included.
func TestResumePropertyConsumer(t *testing.T) { testResumeProperty(t, 1) }

func testResumeProperty(t *testing.T, consumerMin int) {
	opened := &openedCounter{}
	e := newEnv(t,
		withStream(func(o *StreamOptions) { o.MaxMsgs = propMaxMsgs }),
		withConfig(func(c *Config) {
			c.ReplayBatch = 32
			c.RingEvents = propRing
			c.WriteTimeout = time.Minute
			// 1,500 streams from one address: on a quick machine they open
			// faster than the per-address bucket (burst 1000) refills, and
			// a stream sent away is not what this test checks.
			c.IPStreamRate = -1
			c.Logger = slog.New(opened)
			if c.ReplayConsumerMin = consumerMin; consumerMin >= 0 {
				c.ReplayBatch = 8 // a short first batch, many pulls
			}
		}))
	w := newPropWorkload(t, e)
	sessions, final := w.run()

	o := newPropOracle(t, w.rec, final.LastSeq)
	c := propChecker{oracle: o, rec: w.rec, final: final, ringHolds: w.ringHolds}
	var failed, resets, replayedEvents, events int
	kindCount := map[string]int{}
	for i, s := range sessions {
		kindCount[s.kind]++
		r, err := c.check(s)
		if err != nil {
			failed++
			if failed <= 10 {
				t.Errorf("session %d (user u%d, topics %v, kind %s, E=%d, target %d, %d events): %v",
					i, s.user, s.topics, s.kind, s.e, s.target, len(s.evs), err)
			}
			continue
		}
		if r.reset {
			resets++
		}
		replayedEvents += r.replayed
		events += len(s.evs)
	}
	viaConsumer := e.metric(`sserelay_replays_total{source="consumer"}`)
	t.Logf("replays: %v, of which from the store: %v, through a consumer: %v (fallbacks %v)", e.metric("sserelay_replays_total"),
		e.metric("sserelay_store_replays_total"), viaConsumer, e.metric("sserelay_replay_consumer_fallbacks_total"))
	if (consumerMin >= 0) != (viaConsumer > 0) {
		t.Errorf("ReplayConsumerMin %d: %v catch-ups through a consumer", consumerMin, viaConsumer)
	}
	t.Logf("%d sessions %v, %d events published, stream first=%d last=%d; %d events checked, %d resumed; %d history-gone resets; "+
		"ahead ids: %d above the cursor when chosen, %d above it at registration",
		propSessions, kindCount, final.LastSeq, final.FirstSeq, final.LastSeq, events, replayedEvents, resets,
		w.aheadAtChoice.Load(), opened.ahead.Load())
	if failed > 0 {
		t.Fatalf("%d of %d sessions did not get exactly their missed events", failed, propSessions)
	}
	if final.FirstSeq <= 1 || resets == 0 {
		t.Fatalf("the test did not exercise trimming: first sequence %d, %d resets", final.FirstSeq, resets)
	}
}

const (
	propUsers    = 200
	propTopics   = 3
	propSessions = 1500 // 250 of each kind
	propParallel = 32
	propMaxMsgs  = 10000 // the stream trims from the front during the test
	propRing     = 3000  // recent resumes from memory, older ones from the store
)

var propKinds = []string{"none", "old", "edge", "ring-edge", "recent", "ahead"}

// propSubject, propPrefix and propPayload: subject index idx is user
// idx/propTopics, topic idx%propTopics; an event's data starts with its
// subject's prefix.
func propSubject(idx int32) string {
	return fmt.Sprintf("sse.app.u%d.t%d", int(idx)/propTopics, int(idx)%propTopics)
}
func propPrefix(idx int32) string {
	return fmt.Sprintf("u%d.t%d#", int(idx)/propTopics, int(idx)%propTopics)
}
func propPayload(idx int32, n int) string { return propPrefix(idx) + strconv.Itoa(n) }

// propRecord maps every acknowledged stream sequence to the subject index
// (user*topics + topic) it was published to.
type propRecord struct {
	mu  sync.Mutex
	sub map[uint64]int32
}

func (r *propRecord) add(seq uint64, subj int32) {
	r.mu.Lock()
	r.sub[seq] = subj
	r.mu.Unlock()
}

// propSession is one session of the workload and what it received.
type propSession struct {
	user   int
	topics []int // nil: every topic
	kind   string
	hasE   bool
	e      uint64 // the client's position: Last-Event-ID, or the connected event's id
	// mustReset: E+1 had been trimmed before the session opened.
	mustReset bool
	target    uint64 // the marker published after connecting; reading stops there
	evs       []sseEvent
	err       error
}

func (s *propSession) wants(subj int32) bool {
	if int(subj)/propTopics != s.user {
		return false
	}
	return s.topics == nil || slices.Contains(s.topics, int(subj)%propTopics)
}

// ---- the workload

// propWorkload publishes all the time while sessions of every kind open,
// read up to a marker of their own and close.
type propWorkload struct {
	t             *testing.T
	e             *testEnv
	js            jetstream.JetStream // async publishing
	rec           *propRecord
	toks          []string
	aheadAtChoice atomic.Int64 // "ahead" ids above the cursor when chosen
}

func newPropWorkload(t *testing.T, e *testEnv) *propWorkload {
	w := &propWorkload{t: t, e: e, js: asyncJS(t, e.pub), rec: &propRecord{sub: make(map[uint64]int32)}, toks: make([]string, propUsers)}
	for u := range w.toks {
		w.toks[u] = token(t, "u"+strconv.Itoa(u))
	}
	return w
}

// run fills the stream past its limit, so that trimming is under way from
// the first session on, runs the sessions with the publisher going, and
// returns them with the stream's final state.
func (w *propWorkload) run() ([]*propSession, jetstream.StreamState) {
	t := w.t
	pre := int(propMaxMsgs * 1.5)
	preIdx := make([]int32, pre)
	for i, seq := range publishN(t, w.js, pre, func(i int) *nats.Msg {
		preIdx[i] = int32(rand.IntN(propUsers * propTopics))
		return msg(propSubject(preIdx[i]), propPayload(preIdx[i], i))
	}) {
		w.rec.add(seq, preIdx[i])
	}

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	pubErr := make(chan error, 1)
	go func() { pubErr <- w.publish(ctx) }()

	results := make([]*propSession, propSessions)
	sem := make(chan struct{}, propParallel)
	var wg sync.WaitGroup
	for i := range results {
		s := &propSession{user: rand.IntN(propUsers), kind: propKinds[i%len(propKinds)]}
		switch r := rand.IntN(100); {
		case r < 40:
			s.topics = []int{rand.IntN(propTopics)}
		case r < 55:
			p := rand.Perm(propTopics)
			s.topics = []int{p[0], p[1]}
		}
		results[i] = s
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			s.err = w.session(s)
		})
	}
	wg.Wait()
	stop()
	if err := <-pubErr; err != nil {
		t.Fatal(err)
	}
	endCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	final, err := w.streamState(endCtx)
	if err != nil {
		t.Fatal(err)
	}
	return results, final
}

// publish sends batches of async publishes to random subjects until ctx
// ends, recording every acknowledged sequence.
func (w *propWorkload) publish(ctx context.Context) error {
	n := 0
	for ctx.Err() == nil {
		type pending struct {
			f   jetstream.PubAckFuture
			idx int32
		}
		batch := make([]pending, 0, 50)
		for range 50 {
			idx := int32(rand.IntN(propUsers * propTopics))
			n++
			f, err := w.js.PublishMsgAsync(msg(propSubject(idx), propPayload(idx, n)))
			if err != nil {
				return fmt.Errorf("publish: %w", err)
			}
			batch = append(batch, pending{f, idx})
		}
		for _, p := range batch {
			select {
			case ack := <-p.f.Ok():
				w.rec.add(ack.Sequence, p.idx)
			case err := <-p.f.Err():
				return fmt.Errorf("publish %s: %w", p.f.Msg().Subject, err)
			case <-time.After(60 * time.Second):
				return fmt.Errorf("publish %s: no ack", p.f.Msg().Subject)
			}
		}
		time.Sleep(time.Millisecond) // leave the relay some of the 2 cores
	}
	return nil
}

func (w *propWorkload) streamState(ctx context.Context) (jetstream.StreamState, error) {
	s, err := w.e.js.Stream(ctx, "SSE")
	if err != nil {
		return jetstream.StreamState{}, err
	}
	return s.CachedInfo().State, nil
}

func (w *propWorkload) publishSync(ctx context.Context, idx int32, what string) (uint64, error) {
	ack, err := w.e.js.PublishMsg(ctx, msg(propSubject(idx), propPayload(idx, 0)+what))
	if err != nil {
		return 0, fmt.Errorf("publish %s: %w", what, err)
	}
	w.rec.add(ack.Sequence, idx)
	return ack.Sequence, nil
}

// ringHolds reports whether the relay's in-memory ring holds seq: a resume
// from there is served from memory, even if the store has trimmed it (see
// TestHistoryGoneReset).
func (w *propWorkload) ringHolds(seq uint64) bool {
	w.e.relay.hub.mu.Lock()
	defer w.e.relay.hub.mu.Unlock()
	return w.e.relay.hub.ring.covers(seq)
}

func (w *propWorkload) ringFirst() uint64 {
	w.e.relay.hub.mu.Lock()
	defer w.e.relay.hub.mu.Unlock()
	return w.e.relay.hub.ring.first()
}

// session picks the session's id by its kind, opens its stream, publishes
// a few events of its filter while the relay catches it up, then a marker,
// and reads up to the marker.
func (w *propWorkload) session(s *propSession) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ownIdx := func() int32 {
		k := rand.IntN(propTopics)
		if s.topics != nil {
			k = s.topics[rand.IntN(len(s.topics))]
		}
		return int32(s.user*propTopics + k)
	}
	st, err := w.streamState(ctx)
	if err != nil {
		return err
	}
	s.hasE = s.kind != "none"
	switch s.kind {
	case "old": // anywhere in the stream's history, trimmed or not
		s.e = rand.Uint64N(st.LastSeq + 1)
	case "edge": // around the first stored sequence, which moves meanwhile
		s.e = uint64(max(0, int64(st.FirstSeq)-1+int64(rand.IntN(7))-3))
	case "ring-edge": // around the oldest event in memory: the read may go on from the store
		s.e = uint64(max(0, int64(w.ringFirst())-1+int64(rand.IntN(7))-3))
	case "recent":
		s.e = st.LastSeq - rand.Uint64N(min(st.LastSeq, 300)+1)
	case "ahead":
		// A few events of the session's own filter through the second
		// connection; the id of the last one is usually above the relay's
		// cursor when the session registers. Without the relay's "seq <= E"
		// filter these events would arrive twice.
		for range 3 {
			if s.e, err = w.publishSync(ctx, ownIdx(), "/ahead"); err != nil {
				return err
			}
		}
		if s.e > w.e.relay.Cursor() {
			w.aheadAtChoice.Add(1)
		}
	}
	// Neither the store nor the ring has E+1: neither will later.
	s.mustReset = s.hasE && s.e+1 < st.FirstSeq && !w.ringHolds(s.e+1)
	q := "app_id=app"
	for _, k := range s.topics {
		q += "&topic=t" + strconv.Itoa(k)
	}
	hdr := bearer(w.toks[s.user])
	if s.hasE {
		hdr.Set("Last-Event-ID", strconv.FormatUint(s.e, 10))
	}
	stream, err := w.e.tryOpen(q, hdr)
	if err != nil {
		return err
	}
	defer stream.Close()
	hello, err := stream.ReadUntil(30*time.Second, func(sseEvent) bool { return true })
	if err != nil {
		return fmt.Errorf("connected: %w", err)
	}
	if hello[0].Event != EventConnected || hello[0].HasID == s.hasE {
		return fmt.Errorf("first event %+v (has Last-Event-ID: %v)", hello[0], s.hasE)
	}
	if !s.hasE {
		s.e = evID(hello[0])
	}
	// A few events of its own filter while the relay catches the session
	// up: they reach it through the handover queue.
	for range rand.IntN(4) {
		if _, err := w.publishSync(ctx, ownIdx(), "/during"); err != nil {
			return err
		}
	}
	if s.target, err = w.publishSync(ctx, ownIdx(), "/marker"); err != nil {
		return err
	}
	s.evs, err = stream.ReadUntil(45*time.Second, func(ev sseEvent) bool { return evID(ev) >= s.target })
	return err
}

// ---- the oracle

// propOracle knows every stored sequence by subject.
type propOracle struct {
	bySubj [][]uint64 // ascending
}

// newPropOracle checks that every sequence of the stream up to last was
// acknowledged and recorded: the record is then the complete list of what
// was stored.
func newPropOracle(t *testing.T, rec *propRecord, last uint64) *propOracle {
	t.Helper()
	rec.mu.Lock()
	defer rec.mu.Unlock()
	o := &propOracle{bySubj: make([][]uint64, propUsers*propTopics)}
	for seq := uint64(1); seq <= last; seq++ {
		idx, ok := rec.sub[seq]
		if !ok {
			t.Fatalf("stream sequence %d was never acknowledged to the test", seq)
		}
		o.bySubj[idx] = append(o.bySubj[idx], seq) // ascending by construction
	}
	return o
}

// expected returns the ids of s's filter in (from, to], in order.
func (o *propOracle) expected(s *propSession, from, to uint64) []uint64 {
	var out []uint64
	for k := range propTopics {
		if s.topics != nil && !slices.Contains(s.topics, k) {
			continue
		}
		l := o.bySubj[s.user*propTopics+k]
		i := sort.Search(len(l), func(i int) bool { return l[i] > from })
		j := sort.Search(len(l), func(i int) bool { return l[i] > to })
		out = append(out, l[i:j]...)
	}
	slices.Sort(out)
	return out
}

// ---- the checker

// propChecker holds a session's events against the oracle.
type propChecker struct {
	oracle    *propOracle
	rec       *propRecord // complete by now; read without its lock
	final     jetstream.StreamState
	ringHolds func(uint64) bool
}

// propResult is what a correct session showed.
type propResult struct {
	reset    bool // it got a (justified) history-gone reset
	replayed int  // events it resumed (no reset, with an id)
}

// check walks the session's events: ids only go up; every event is of the
// session's filter with the right data; a reset may only say history-gone,
// and then the events above its id must follow exactly.
func (c propChecker) check(s *propSession) (propResult, error) {
	if s.err != nil {
		return propResult{}, s.err
	}
	prev, base := s.e, s.e
	resetAt := -1
	for j, ev := range s.evs {
		id := evID(ev)
		if ev.Event == EventReset {
			var body struct{ Reason string }
			if json.Unmarshal([]byte(ev.Data), &body) != nil || body.Reason != ResetHistoryGone || !ev.HasID || id < prev {
				return propResult{}, fmt.Errorf("event %d: reset %+v after id %d", j, ev, prev)
			}
			prev, base, resetAt = id, id, j
			continue
		}
		idx, known := c.rec.sub[id]
		if !ev.HasID || id <= prev || !known || !s.wants(idx) || !strings.HasPrefix(ev.Data, propPrefix(idx)) {
			return propResult{}, fmt.Errorf("event %d: %+v after id %d (stored subject known: %v)", j, ev, prev, known)
		}
		prev = id
	}
	var got []uint64
	for _, ev := range s.evs[resetAt+1:] {
		got = append(got, evID(ev))
	}
	want := c.oracle.expected(s, base, s.target)
	if !slices.Equal(got, want) {
		return propResult{}, fmt.Errorf("after id %d got %d ids, want %d: %s", base, len(got), len(want), diffIDs(got, want))
	}
	var r propResult
	if resetAt >= 0 {
		r.reset = true
		// Trimming only moves forward: a justified history-gone means E+1
		// is gone by now, from the store and from the ring.
		if c.final.FirstSeq <= s.e+1 || c.ringHolds(s.e+1) {
			return propResult{}, fmt.Errorf("history-gone reset, but E+1 is still there (stream first sequence %d, in the ring: %v)", c.final.FirstSeq, c.ringHolds(s.e+1))
		}
	} else if s.mustReset {
		return propResult{}, fmt.Errorf("E+1 was trimmed before the session opened (it needed history-gone), but no reset came")
	}
	if s.hasE && resetAt < 0 {
		r.replayed = len(want)
	}
	return r, nil
}
