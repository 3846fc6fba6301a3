package relay

// Resume after reconnect: every missed event exactly once.
//
// These tests run the relay against a real embedded NATS server and real
// loopback sockets. They never assert on speed: every wait polls with a
// generous deadline, and every check is about which ids arrive in which order.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
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

	"github.com/sserelay/sserelay/embedded"
)

// ---------------------------------------------------------------------------
// Helpers (prefixed rs: other test files share the package).

// rsID returns the decimal id of ev (0 if it has none).
func rsID(ev sseEvent) uint64 {
	n, _ := strconv.ParseUint(ev.ID, 10, 64)
	return n
}

// rsReadUntil reads events from s until stop returns true, for at most d
// (then the stream is closed and the error says so). It reads on the calling
// goroutine: no goroutine per event, unlike sseStream.Next.
func rsReadUntil(s *sseStream, d time.Duration, stop func(sseEvent) bool) ([]sseEvent, error) {
	var timedOut atomic.Bool
	timer := time.AfterFunc(d, func() { timedOut.Store(true); s.Close() })
	defer timer.Stop()
	var evs []sseEvent
	for {
		ev, err := s.read()
		if err != nil {
			if timedOut.Load() {
				err = fmt.Errorf("timed out after %s: %w", d, err)
			}
			return evs, fmt.Errorf("after %d events: %w", len(evs), err)
		}
		evs = append(evs, ev)
		if stop(ev) {
			return evs, nil
		}
	}
}

// rsSmallRcvBuf is the receive buffer of a client that stops reading. Not
// smaller: with a buffer far below the loopback MSS (64 KiB) the sender stays
// window-limited after the client reads again (measured with 4 KiB: snd_wnd
// 8192, persist timer running, rwnd_limited 100%, a 4 MB catch-up crawling
// for minutes). That is the kernel, not the relay.
const rsSmallRcvBuf = 256 << 10

// rsScan reads events from s with no allocation per event and calls f with
// each event's id, event name and data (valid only during the call) until f
// returns true; for at most d. Comments and retry-only blocks are skipped.
func rsScan(s *sseStream, d time.Duration, f func(id uint64, event, data []byte) bool) error {
	var timedOut atomic.Bool
	timer := time.AfterFunc(d, func() { timedOut.Store(true); s.Close() })
	defer timer.Stop()
	var id uint64
	var event, data []byte
	hasData := false
	for {
		line, err := s.br.ReadSlice('\n')
		if err != nil {
			if timedOut.Load() {
				return fmt.Errorf("timed out after %s: %w", d, err)
			}
			return err
		}
		line = line[:len(line)-1]
		switch {
		case len(line) == 0:
			if hasData {
				if f(id, event, data) {
					return nil
				}
			}
			event, data, hasData = event[:0], data[:0], false
		case line[0] == ':':
		case bytes.HasPrefix(line, []byte("id: ")):
			id = 0
			for _, c := range line[4:] {
				id = id*10 + uint64(c-'0')
			}
		case bytes.HasPrefix(line, []byte("event: ")):
			event = append(event[:0], line[7:]...)
		case bytes.HasPrefix(line, []byte("data: ")):
			if hasData {
				data = append(data, '\n')
			}
			data = append(data, line[6:]...)
			hasData = true
		}
	}
}

// rsOpenRaw opens GET /v1/events?query over a plain TCP connection whose
// receive buffer is rcvBuf bytes, and reads only the response header: the
// events stay in the socket until the caller reads them, so a test can play a
// client that stops reading.
func rsOpenRaw(t testing.TB, e *testEnv, query string, hdr http.Header, rcvBuf int) *sseStream {
	t.Helper()
	addr := strings.TrimPrefix(e.url, "http://")
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if rcvBuf > 0 {
		if err := conn.(*net.TCPConn).SetReadBuffer(rcvBuf); err != nil {
			t.Fatal(err)
		}
	}
	req, _ := http.NewRequest(http.MethodGet, e.url+"/v1/events?"+query, nil)
	for k, v := range hdr {
		req.Header[k] = v
	}
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	if err := req.Write(conn); err != nil {
		conn.Close()
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReaderSize(conn, 1024), req)
	if err != nil {
		conn.Close()
		t.Fatal(err)
	}
	_ = conn.SetDeadline(time.Time{})
	if resp.StatusCode != http.StatusOK {
		conn.Close()
		t.Fatalf("GET /v1/events?%s: status %d", query, resp.StatusCode)
	}
	s := &sseStream{Resp: resp, br: bufio.NewReaderSize(resp.Body, 1024), cancel: func() { conn.Close() }}
	t.Cleanup(s.Close)
	return s
}

// rsAsyncJS returns a JetStream context on nc for async publishing.
func rsAsyncJS(t testing.TB, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(512), jetstream.WithPublishAsyncTimeout(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// rsPublishN publishes n messages made by gen with async JetStream publish,
// a window at a time, and returns their stream sequences in order.
func rsPublishN(t testing.TB, js jetstream.JetStream, n int, gen func(i int) *nats.Msg) []uint64 {
	t.Helper()
	const window = 500
	seqs := make([]uint64, 0, n)
	futs := make([]jetstream.PubAckFuture, 0, window)
	for i := 0; i < n; {
		futs = futs[:0]
		for ; i < n && len(futs) < window; i++ {
			f, err := js.PublishMsgAsync(gen(i))
			if err != nil {
				t.Fatalf("publish %d: %v", i, err)
			}
			futs = append(futs, f)
		}
		for _, f := range futs {
			select {
			case ack := <-f.Ok():
				seqs = append(seqs, ack.Sequence)
			case err := <-f.Err():
				t.Fatalf("publish %s: %v", f.Msg().Subject, err)
			case <-time.After(60 * time.Second):
				t.Fatalf("publish %s: no ack", f.Msg().Subject)
			}
		}
	}
	return seqs
}

// rsPublishFast publishes n messages made by gen with core NATS publishes
// (no ack per message: several times faster than JetStream publishes under
// -race) and returns their stream sequences. Nothing else may publish
// meanwhile: the stream stores one connection's messages in order, so the
// i-th message gets the sequence after the i-1-th; the function checks the
// final sequence and a sample of subjects.
func rsPublishFast(t testing.TB, e *testEnv, n int, gen func(i int) *nats.Msg) []uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	stream, err := e.js.Stream(ctx, "SSE")
	if err != nil {
		t.Fatal(err)
	}
	base := stream.CachedInfo().State.LastSeq
	subjects := map[uint64]string{}
	for i := range n {
		m := gen(i)
		if i%997 == 0 || i == n-1 {
			subjects[base+1+uint64(i)] = m.Subject
		}
		if err := e.pub.PublishMsg(m); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
		if i%2000 == 1999 { // far below the stream's ingest queue limit
			if err := e.pub.FlushWithContext(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := e.pub.FlushWithContext(ctx); err != nil {
		t.Fatal(err)
	}
	want := base + uint64(n)
	for {
		info, err := stream.Info(ctx)
		if err != nil {
			t.Fatalf("stream info: %v", err)
		}
		if last := info.State.LastSeq; last == want {
			break
		} else if last > want || ctx.Err() != nil {
			t.Fatalf("stream last sequence %d, want %d", last, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for seq, subj := range subjects {
		m, err := stream.GetMsg(ctx, seq)
		if err != nil || m.Subject != subj {
			t.Fatalf("sequence %d: %v %v, want subject %s", seq, m, err, subj)
		}
	}
	seqs := make([]uint64, n)
	for i := range seqs {
		seqs[i] = base + 1 + uint64(i)
	}
	return seqs
}

// rsMsg builds a message; hdrs are name, value pairs.
func rsMsg(subject, data string, hdrs ...string) *nats.Msg {
	m := nats.NewMsg(subject)
	m.Data = []byte(data)
	for i := 0; i+1 < len(hdrs); i += 2 {
		m.Header.Set(hdrs[i], hdrs[i+1])
	}
	return m
}

// rsMetric reads one sample of GET /metrics (name may carry labels, as in
// `sserelay_resets_total{reason="history-gone"}`; without, the samples of
// every label are summed).
func rsMetric(t testing.TB, e *testEnv, name string) float64 {
	t.Helper()
	return scrapeURL(t, e.url+"/metrics").value(t, name)
}

// rsExpectReset checks that ev is a sserelay.reset with reason and id.
func rsExpectReset(t testing.TB, ev sseEvent, reason string, id uint64) {
	t.Helper()
	var body struct {
		Reason string `json:"reason"`
	}
	if ev.Event != EventReset || json.Unmarshal([]byte(ev.Data), &body) != nil || body.Reason != reason {
		t.Fatalf("got %+v, want %s with reason %q", ev, EventReset, reason)
	}
	if !ev.HasID || rsID(ev) != id {
		t.Fatalf("reset %+v: want id %d (the cursor)", ev, id)
	}
}

// rsWaitFor polls cond until it holds or the deadline passes.
func rsWaitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// rsGateHandler is a slog handler that blocks the goroutine that logs a
// message containing match, while armed, until released. The dispatcher logs
// a dropped event before it takes the registry lock, so this holds the relay's
// cursor still while the stream moves on: a deterministic "client ahead of
// this relay" without a second server.
type rsGateHandler struct {
	match string
	armed atomic.Bool
	hit   chan struct{}
	gate  chan struct{}
	once  sync.Once
}

func newGateHandler(match string) *rsGateHandler {
	return &rsGateHandler{match: match, hit: make(chan struct{}, 1), gate: make(chan struct{})}
}

func (h *rsGateHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *rsGateHandler) Handle(_ context.Context, r slog.Record) error {
	if h.armed.Load() && strings.Contains(r.Message, h.match) {
		select {
		case h.hit <- struct{}{}:
		default:
		}
		<-h.gate
	}
	return nil
}
func (h *rsGateHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *rsGateHandler) WithGroup(string) slog.Handler      { return h }
func (h *rsGateHandler) release()                           { h.once.Do(func() { close(h.gate) }) }

// rsOpenedCounter is a slog handler that counts "stream opened" records whose
// Last-Event-ID was ahead of the relay's cursor at registration.
type rsOpenedCounter struct{ ahead atomic.Int64 }

func (h *rsOpenedCounter) Enabled(context.Context, slog.Level) bool { return true }
func (h *rsOpenedCounter) Handle(_ context.Context, r slog.Record) error {
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
func (h *rsOpenedCounter) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *rsOpenedCounter) WithGroup(string) slog.Handler      { return h }

// ---------------------------------------------------------------------------
// 1. The property test.

// rsRecord maps every acknowledged stream sequence to the subject index
// (user*topics + topic) it was published to.
type rsRecord struct {
	mu  sync.Mutex
	sub map[uint64]int32
}

func (r *rsRecord) add(seq uint64, subj int32) {
	r.mu.Lock()
	r.sub[seq] = subj
	r.mu.Unlock()
}

type rsSession struct {
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

func (s *rsSession) wants(subj int32, topics int) bool {
	if int(subj)/topics != s.user {
		return false
	}
	return s.topics == nil || slices.Contains(s.topics, int(subj)%topics)
}

func TestResumeProperty(t *testing.T) {
	const (
		users    = 200
		topics   = 3
		sessions = 1500 // 250 of each kind
		parallel = 32
		maxMsgs  = 10000 // the stream trims from the front during the test
		ring     = 3000  // recent resumes from memory, older ones from the store
	)
	opened := &rsOpenedCounter{}
	e := newEnv(t,
		withStream(func(o *StreamOptions) { o.MaxMsgs = maxMsgs }),
		withConfig(func(c *Config) {
			c.ReplayBatch = 32
			c.RingEvents = ring
			c.WriteTimeout = time.Minute
			c.Logger = slog.New(opened)
		}))
	js := rsAsyncJS(t, e.pub)
	subject := func(idx int32) string { return fmt.Sprintf("sse.app.u%d.t%d", int(idx)/topics, int(idx)%topics) }
	dataPrefix := func(idx int32) string { return fmt.Sprintf("u%d.t%d#", int(idx)/topics, int(idx)%topics) }
	payload := func(idx int32, n int) string { return dataPrefix(idx) + strconv.Itoa(n) }
	rec := &rsRecord{sub: make(map[uint64]int32)}
	toks := make([]string, users)
	for u := range toks {
		toks[u] = token(t, "u"+strconv.Itoa(u))
	}

	// Fill the stream past its limit so that trimming is under way from the
	// first session on.
	pre := int(maxMsgs * 1.5)
	preIdx := make([]int32, pre)
	for i, seq := range rsPublishN(t, js, pre, func(i int) *nats.Msg {
		preIdx[i] = int32(rand.IntN(users * topics))
		return rsMsg(subject(preIdx[i]), payload(preIdx[i], i))
	}) {
		rec.add(seq, preIdx[i])
	}

	// The publisher: batches of async publishes until the sessions are done.
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var published atomic.Int64
	pubErr := make(chan error, 1)
	go func() {
		pubErr <- func() error {
			n := 0
			for ctx.Err() == nil {
				type pending struct {
					f   jetstream.PubAckFuture
					idx int32
				}
				batch := make([]pending, 0, 50)
				for range 50 {
					idx := int32(rand.IntN(users * topics))
					n++
					f, err := js.PublishMsgAsync(rsMsg(subject(idx), payload(idx, n)))
					if err != nil {
						return fmt.Errorf("publish: %w", err)
					}
					batch = append(batch, pending{f, idx})
				}
				for _, p := range batch {
					select {
					case ack := <-p.f.Ok():
						rec.add(ack.Sequence, p.idx)
						published.Add(1)
					case err := <-p.f.Err():
						return fmt.Errorf("publish %s: %w", p.f.Msg().Subject, err)
					case <-time.After(60 * time.Second):
						return fmt.Errorf("publish %s: no ack", p.f.Msg().Subject)
					}
				}
				time.Sleep(time.Millisecond) // leave the relay some of the 2 cores
			}
			return nil
		}()
	}()

	streamState := func(ctx context.Context) (jetstream.StreamState, error) {
		s, err := e.js.Stream(ctx, "SSE")
		if err != nil {
			return jetstream.StreamState{}, err
		}
		return s.CachedInfo().State, nil
	}
	publishSync := func(ctx context.Context, idx int32, what string) (uint64, error) {
		ack, err := e.js.PublishMsg(ctx, rsMsg(subject(idx), payload(idx, 0)+what))
		if err != nil {
			return 0, fmt.Errorf("publish %s: %w", what, err)
		}
		rec.add(ack.Sequence, idx)
		return ack.Sequence, nil
	}

	// ringHolds reports whether the relay's in-memory ring holds seq: a
	// resume from there is served from memory, even if the store has
	// trimmed it (see TestHistoryGoneReset).
	ringHolds := func(seq uint64) bool {
		e.relay.hub.mu.Lock()
		defer e.relay.hub.mu.Unlock()
		return e.relay.hub.ring.covers(seq)
	}
	ringFirst := func() uint64 {
		e.relay.hub.mu.Lock()
		defer e.relay.hub.mu.Unlock()
		return e.relay.hub.ring.first()
	}
	var aheadAtChoice atomic.Int64
	runSession := func(s *rsSession) error {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		ownIdx := func() int32 {
			k := rand.IntN(topics)
			if s.topics != nil {
				k = s.topics[rand.IntN(len(s.topics))]
			}
			return int32(s.user*topics + k)
		}
		st, err := streamState(ctx)
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
			s.e = uint64(max(0, int64(ringFirst())-1+int64(rand.IntN(7))-3))
		case "recent":
			s.e = st.LastSeq - rand.Uint64N(min(st.LastSeq, 300)+1)
		case "ahead":
			// A few events of the session's own filter through the second
			// connection; the id of the last one is usually above the
			// relay's cursor when the session registers. Without the relay's
			// "seq <= E" filter these events would arrive twice.
			for range 3 {
				if s.e, err = publishSync(ctx, ownIdx(), "/ahead"); err != nil {
					return err
				}
			}
			if s.e > e.relay.Cursor() {
				aheadAtChoice.Add(1)
			}
		}
		// Neither the store nor the ring has E+1: neither will later.
		s.mustReset = s.hasE && s.e+1 < st.FirstSeq && !ringHolds(s.e+1)
		q := "app_id=app"
		for _, k := range s.topics {
			q += "&topic=t" + strconv.Itoa(k)
		}
		hdr := bearer(toks[s.user])
		if s.hasE {
			hdr.Set("Last-Event-ID", strconv.FormatUint(s.e, 10))
		}
		stream, err := e.tryOpen(q, hdr)
		if err != nil {
			return err
		}
		defer stream.Close()
		hello, err := rsReadUntil(stream, 30*time.Second, func(sseEvent) bool { return true })
		if err != nil {
			return fmt.Errorf("connected: %w", err)
		}
		if hello[0].Event != EventConnected || hello[0].HasID == s.hasE {
			return fmt.Errorf("first event %+v (has Last-Event-ID: %v)", hello[0], s.hasE)
		}
		if !s.hasE {
			s.e = rsID(hello[0])
		}
		// A few events of its own filter while the relay catches the session
		// up: they reach it through the handover queue.
		for range rand.IntN(4) {
			if _, err := publishSync(ctx, ownIdx(), "/during"); err != nil {
				return err
			}
		}
		if s.target, err = publishSync(ctx, ownIdx(), "/marker"); err != nil {
			return err
		}
		s.evs, err = rsReadUntil(stream, 45*time.Second, func(ev sseEvent) bool { return rsID(ev) >= s.target })
		return err
	}

	kinds := []string{"none", "old", "edge", "ring-edge", "recent", "ahead"}
	results := make([]*rsSession, sessions)
	sem := make(chan struct{}, parallel)
	var wg sync.WaitGroup
	for i := range results {
		s := &rsSession{user: rand.IntN(users), kind: kinds[i%len(kinds)]}
		switch r := rand.IntN(100); {
		case r < 40:
			s.topics = []int{rand.IntN(topics)}
		case r < 55:
			p := rand.Perm(topics)
			s.topics = []int{p[0], p[1]}
		}
		results[i] = s
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			s.err = runSession(s)
		})
	}
	wg.Wait()
	stop()
	if err := <-pubErr; err != nil {
		t.Fatal(err)
	}
	endCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	final, err := streamState(endCtx)
	if err != nil {
		t.Fatal(err)
	}

	// Every sequence in the stream was acknowledged and recorded: the record
	// is the complete stored sequence list.
	rec.mu.Lock()
	defer rec.mu.Unlock()
	bySubj := make([][]uint64, users*topics)
	for seq := uint64(1); seq <= final.LastSeq; seq++ {
		idx, ok := rec.sub[seq]
		if !ok {
			t.Fatalf("stream sequence %d was never acknowledged to the test", seq)
		}
		bySubj[idx] = append(bySubj[idx], seq) // ascending by construction
	}
	expected := func(s *rsSession, from, to uint64) []uint64 {
		var out []uint64
		for k := range topics {
			if s.topics != nil && !slices.Contains(s.topics, k) {
				continue
			}
			l := bySubj[s.user*topics+k]
			i := sort.Search(len(l), func(i int) bool { return l[i] > from })
			j := sort.Search(len(l), func(i int) bool { return l[i] > to })
			out = append(out, l[i:j]...)
		}
		slices.Sort(out)
		return out
	}

	var failed, resets, replayedEvents, events int
	kindCount := map[string]int{}
	for i, s := range results {
		kindCount[s.kind]++
		fail := func(format string, args ...any) {
			failed++
			if failed <= 10 {
				t.Errorf("session %d (user u%d, topics %v, kind %s, E=%d, target %d, %d events): %s",
					i, s.user, s.topics, s.kind, s.e, s.target, len(s.evs), fmt.Sprintf(format, args...))
			}
		}
		if s.err != nil {
			fail("%v", s.err)
			continue
		}
		// Walk the stream: ids only go up; every event is of the session's
		// filter with the right data; a reset may only say history-gone, and
		// then the events above its id must follow exactly.
		prev, base := s.e, s.e
		resetAt := -1
		ok := true
		for j, ev := range s.evs {
			id := rsID(ev)
			if ev.Event == EventReset {
				var body struct{ Reason string }
				if json.Unmarshal([]byte(ev.Data), &body) != nil || body.Reason != ResetHistoryGone || !ev.HasID || id < prev {
					fail("event %d: reset %+v after id %d", j, ev, prev)
					ok = false
					break
				}
				prev, base, resetAt = id, id, j
				continue
			}
			idx, known := rec.sub[id]
			if !ev.HasID || id <= prev || !known || !s.wants(idx, topics) || !strings.HasPrefix(ev.Data, dataPrefix(idx)) {
				fail("event %d: %+v after id %d (stored subject known: %v)", j, ev, prev, known)
				ok = false
				break
			}
			prev = id
		}
		if !ok {
			continue
		}
		var got []uint64
		for _, ev := range s.evs[resetAt+1:] {
			got = append(got, rsID(ev))
		}
		want := expected(s, base, s.target)
		if !slices.Equal(got, want) {
			fail("after id %d got %d ids, want %d: %s", base, len(got), len(want), rsDiff(got, want))
			continue
		}
		if resetAt >= 0 {
			resets++
			// Trimming only moves forward: a justified history-gone means
			// E+1 is gone by now, from the store and from the ring.
			if final.FirstSeq <= s.e+1 || ringHolds(s.e+1) {
				fail("history-gone reset, but E+1 is still there (stream first sequence %d, in the ring: %v)", final.FirstSeq, ringHolds(s.e+1))
			}
		} else if s.mustReset {
			fail("E+1 was trimmed before the session opened (it needed history-gone), but no reset came")
		}
		if s.hasE && resetAt < 0 {
			replayedEvents += len(want)
		}
		events += len(s.evs)
	}
	t.Logf("replays: %v, of which from the store: %v", rsMetric(t, e, "sserelay_replays_total"), rsMetric(t, e, "sserelay_store_replays_total"))
	t.Logf("%d sessions %v, %d events published, stream first=%d last=%d; %d events checked, %d resumed; %d history-gone resets; "+
		"ahead ids: %d above the cursor when chosen, %d above it at registration",
		sessions, kindCount, final.LastSeq, final.FirstSeq, final.LastSeq, events, replayedEvents, resets,
		aheadAtChoice.Load(), opened.ahead.Load())
	if failed > 0 {
		t.Fatalf("%d of %d sessions did not get exactly their missed events", failed, sessions)
	}
	if final.FirstSeq <= 1 || resets == 0 {
		t.Fatalf("the test did not exercise trimming: first sequence %d, %d resets", final.FirstSeq, resets)
	}
}

// rsDiff describes the first difference of two id lists.
func rsDiff(got, want []uint64) string {
	for i := range min(len(got), len(want)) {
		if got[i] != want[i] {
			lo := max(0, i-2)
			return fmt.Sprintf("first difference at %d: got %v, want %v", i, got[lo:min(len(got), i+3)], want[lo:min(len(want), i+3)])
		}
	}
	if len(got) > len(want) {
		return fmt.Sprintf("extra ids %v", got[len(want):min(len(got), len(want)+5)])
	}
	if len(got) < len(want) {
		return fmt.Sprintf("missing ids %v", want[len(got):min(len(want), len(got)+5)])
	}
	return "equal"
}

// rsExpectIDs reads len(want) events (within d in all) and checks that their
// ids are exactly want, and that none is a reset.
func rsExpectIDs(t testing.TB, s *sseStream, d time.Duration, want ...uint64) []sseEvent {
	t.Helper()
	if len(want) == 0 {
		return nil
	}
	n := 0
	evs, err := rsReadUntil(s, d, func(sseEvent) bool { n++; return n == len(want) })
	got := make([]uint64, len(evs))
	for i, ev := range evs {
		got[i] = rsID(ev)
		if ev.Event == EventReset {
			t.Fatalf("event %d: unexpected reset %+v", i, ev)
		}
	}
	if err != nil {
		t.Fatalf("got ids %v, want %v: %v", got, want, err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("ids: %s", rsDiff(got, want))
	}
	return evs
}

// ---------------------------------------------------------------------------
// 2. A slow reader.

// TestSlowReaderResumesExactlyOnce: a client that stops reading overflows its
// queue of 8 events; the relay drops the queue and catches it up from the
// store, so that it still gets every event exactly once, in order, while
// another user's stream is not held up.
func TestSlowReaderResumesExactlyOnce(t *testing.T) {
	t.Run("ring", func(t *testing.T) { rsSlowReader(t, 0) })
	t.Run("store", func(t *testing.T) { rsSlowReader(t, -1) })
}

func rsSlowReader(t *testing.T, ringEvents int) {
	const aliceN, bobN = 2000, 200
	e := newEnv(t, withConfig(func(c *Config) {
		c.QueueEvents = 8
		c.RingEvents = ringEvents
		c.WriteTimeout = 2 * time.Minute // the stalled client must not be cut off
	}))
	js := rsAsyncJS(t, e.pub)

	// alice's client: a small receive buffer that it does not read; 2,000
	// events of 4 KB are far more than the socket buffers hold, so the
	// relay's writer blocks and the dispatcher overflows her queue.
	alice := rsOpenRaw(t, e, "app_id=demo", bearer(token(t, "alice")), rsSmallRcvBuf)
	if hello, err := rsReadUntil(alice, 10*time.Second, func(sseEvent) bool { return true }); err != nil || hello[0].Event != EventConnected {
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
		evs, err := rsReadUntil(bob, 2*time.Minute, func(sseEvent) bool { n++; return n == bobN })
		bobDone <- result{evs, err}
	}()

	pad := strings.Repeat("x", 4000)
	isBob := func(i int) bool { return i%11 == 10 } // 200 of 2,200
	seqs := rsPublishN(t, js, aliceN+bobN, func(i int) *nats.Msg {
		if isBob(i) {
			return rsMsg("sse.demo.bob", "b"+strconv.Itoa(i))
		}
		return rsMsg("sse.demo.alice", "a"+strconv.Itoa(i)+":"+pad)
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
		got = append(got, rsID(ev))
	}
	if !slices.Equal(got, bobSeqs) {
		t.Fatalf("bob, while alice stalls: %s", rsDiff(got, bobSeqs))
	}

	// Now alice reads: every event exactly once, in order.
	last := aliceSeqs[len(aliceSeqs)-1]
	evs, err := rsReadUntil(alice, 2*time.Minute, func(ev sseEvent) bool { return rsID(ev) >= last })
	got = got[:0]
	for _, ev := range evs {
		got = append(got, rsID(ev))
	}
	if err != nil {
		t.Fatalf("alice: %v (ids so far: %s)", err, rsDiff(got, aliceSeqs))
	}
	if !slices.Equal(got, aliceSeqs) {
		t.Fatalf("alice: %s", rsDiff(got, aliceSeqs))
	}
	for i, ev := range evs {
		if ev.Event != "" || ev.Data != aliceData[i] {
			t.Fatalf("event %d (id %s): event %q, data %.20q, want %.20q", i, ev.ID, ev.Event, ev.Data, aliceData[i])
		}
	}
	if n := rsMetric(t, e, "sserelay_queue_overflows_total"); n < 1 {
		t.Fatalf("sserelay_queue_overflows_total = %v: alice's queue never overflowed, the test proved nothing", n)
	}
	t.Logf("overflows %v, replays %v", rsMetric(t, e, "sserelay_queue_overflows_total"), rsMetric(t, e, "sserelay_replays_total"))
}

// ---------------------------------------------------------------------------
// 3. History gone, unknown ids, a client ahead of the relay.

// TestHistoryGoneReset: a client whose next event has been trimmed gets
// sserelay.reset history-gone with id = the cursor, then the live stream;
// one whose next event is the stream's first gets everything, no reset.
// "store": the relay's in-memory ring off, every resume reads the store.
// "ring": the default config, whose ring still holds the trimmed events;
// "ring-after-purge": the stream was purged, the ring still holds the events.
func TestHistoryGoneReset(t *testing.T) {
	t.Run("store", func(t *testing.T) { rsHistoryGone(t, -1, false) })
	t.Run("ring", func(t *testing.T) { rsHistoryGone(t, 0, false) })
	t.Run("ring-after-purge", func(t *testing.T) { rsHistoryGone(t, 0, true) })
}

func rsHistoryGone(t *testing.T, ringEvents int, purge bool) {
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
	resume := func(id uint64) *sseStream {
		h := bearer(tok)
		h.Set("Last-Event-ID", strconv.FormatUint(id, 10))
		s := e.open("app_id=demo", h)
		if ev := s.Connected(t); ev.HasID {
			t.Fatalf("connected after Last-Event-ID carries id: %+v", ev)
		}
		return s
	}
	expectGone := func(s *sseStream, id uint64) {
		t.Helper()
		ev := s.MustNext(t)
		if ev.Event != EventReset {
			t.Fatalf("BUG: Last-Event-ID %d: event %d is no longer in the stream (first sequence %d), yet the relay sent %+v "+
				"instead of sserelay.reset history-gone: it replays from its in-memory ring events that the stream's retention "+
				"(or a purge) has removed; DESIGN: E+1 < FirstSeq means history-gone", id, id+1, first, ev)
		}
		rsExpectReset(t, ev, ResetHistoryGone, last)
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
		rsExpectIDs(t, edge, 30*time.Second, seqs[20:]...)
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
		rsExpectIDs(t, st, 30*time.Second, live, live2)
	}
	// A reconnect with the reset's id resumes from the live point.
	again := resume(last)
	rsExpectIDs(t, again, 30*time.Second, live, live2)

	wantResets := 2.0 // s and gone
	if purge {
		wantResets = 1
	}
	if n := rsMetric(t, e, `sserelay_resets_total{reason="history-gone"}`); n != wantResets {
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
		h := bearer(tok)
		h.Set("Last-Event-ID", strconv.FormatUint(id, 10))
		s := e.open("app_id=demo", h)
		if ev := s.Connected(t); ev.HasID {
			t.Fatalf("connected after Last-Event-ID carries id: %+v", ev)
		}
		rsExpectReset(t, s.MustNext(t), ResetUnknownID, last)
		streams = append(streams, s)
	}
	// The query parameter works the same way.
	q := e.open("app_id=demo&last_event_id="+strconv.FormatUint(last+77, 10), bearer(tok))
	q.Connected(t)
	rsExpectReset(t, q.MustNext(t), ResetUnknownID, last)
	streams = append(streams, q)

	live := e.publish("sse.demo.alice", "live")
	for _, s := range streams {
		rsExpectIDs(t, s, 30*time.Second, live)
	}
	if n := rsMetric(t, e, `sserelay_resets_total{reason="unknown-id"}`); n != 4 {
		t.Fatalf("unknown-id resets = %v, want 4", n)
	}
	if n := rsMetric(t, e, `sserelay_resets_total{reason="history-gone"}`); n != 0 {
		t.Fatalf("history-gone resets = %v, want 0", n)
	}
}

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

	open := func(id uint64) *sseStream {
		h := bearer(tok)
		h.Set("Last-Event-ID", strconv.FormatUint(id, 10))
		s := e.open("app_id=demo", h)
		if ev := s.Connected(t); ev.HasID {
			t.Fatalf("connected after Last-Event-ID carries id: %+v", ev)
		}
		return s
	}
	ahead := open(held[2])    // from a relay that had dispatched held[2]
	atLast := open(held[5])   // the stream's last sequence
	behind := open(before[0]) // an ordinary resume: (before[0], cursor] from the store
	fresh := e.open("app_id=demo", bearer(tok))
	if ev := fresh.Connected(t); rsID(ev) != before[2] {
		t.Fatalf("connected %+v, want id %d (the cursor)", ev, before[2])
	}
	if c := e.relay.Cursor(); c != before[2] {
		t.Fatalf("cursor moved to %d while the sessions opened", c)
	}

	gate.armed.Store(false)
	gate.release()
	e.waitCursor(held[5])
	live := e.publish("sse.demo.alice", "live")
	rsExpectIDs(t, ahead, 30*time.Second, held[3], held[4], held[5], live)
	rsExpectIDs(t, atLast, 30*time.Second, live)
	rsExpectIDs(t, behind, 30*time.Second, append(append([]uint64{before[1], before[2]}, held...), live)...)
	rsExpectIDs(t, fresh, 30*time.Second, append(slices.Clone(held), live)...)
	if n := rsMetric(t, e, `sserelay_resets_total{reason="unknown-id"}`); n != 0 {
		t.Fatalf("unknown-id resets = %v, want 0", n)
	}
}

// TestResumeOverlappingFiltersNoDuplicate: a filter may name the same topic
// or feed twice, or a topic and one of its subtopics; an event that matches
// it more than once is still one event, live and on resume.
func TestResumeOverlappingFiltersNoDuplicate(t *testing.T) {
	t.Run("ring", func(t *testing.T) { rsOverlapping(t, 0) })
	t.Run("store", func(t *testing.T) { rsOverlapping(t, -1) })
}

func rsOverlapping(t *testing.T, ringEvents int) {
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
			t.Run("live", func(t *testing.T) { rsExpectIDs(t, live, 30*time.Second, want(more)...) })
			t.Run("resume", func(t *testing.T) {
				rsExpectIDs(t, resumed, 30*time.Second, append(want(evs), want(more)...)...)
			})
			evs = append(evs, more...)
		})
	}
}

// ---------------------------------------------------------------------------
// 4. Large replays and replay slots.

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
	e := newRsEnv(t, rsEnvOptions{
		config: func(c *Config) {
			c.ReplayBatch = 256
			c.RingEvents = -1 // the store path; the ring only holds what this relay dispatched anyway
			c.WriteTimeout = 2 * time.Minute
		},
		// Stored before the relay starts: it resumes them from the store
		// without having dispatched them.
		history: func(e *testEnv) {
			seqs = rsPublishFast(t, e, aliceN+otherN, func(i int) *nats.Msg {
				switch {
				case !isAlice(i):
					return rsMsg("sse.demo.o"+strconv.Itoa(i%50), "o")
				case i%4 < 2: // alice's events on two subjects: the replay merges two store cursors
					return rsMsg("sse.demo.alice", aliceData(i))
				default:
					return rsMsg("sse.demo.alice.x", aliceData(i))
				}
			})
		},
	})
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
	s := rsOpenRaw(t, e.testEnv, "app_id=demo", h, rsSmallRcvBuf)
	first, err := rsReadUntil(s, 30*time.Second, func(ev sseEvent) bool { return ev.Event != EventConnected })
	if err != nil || first[0].Event != EventConnected || rsID(first[1]) != want[0] {
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

	i := 1
	err = rsScan(s, 2*time.Minute, func(id uint64, event, data []byte) bool {
		if len(event) > 0 || id != want[i] || string(data) != aliceData(wantIdx[i]) {
			err := fmt.Errorf("event %d: got id %d event %q data %.20q, want id %d", i, id, event, data, want[i])
			t.Error(err)
			return true
		}
		i++
		return i == len(want)
	})
	if err != nil {
		t.Fatalf("after %d of %d events: %v", i, len(want), err)
	}
	if n := rsMetric(t, e.testEnv, "sserelay_events_replayed_total"); n != aliceN {
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
	js := rsAsyncJS(t, e.pub)
	user := func(i int) string { return "u" + strconv.Itoa(i%users) }
	seqs := rsPublishN(t, js, users*per, func(i int) *nats.Msg {
		return rsMsg("sse.demo."+user(i)+".t"+strconv.Itoa(i%3), "e"+strconv.Itoa(i))
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
	live := rsPublishN(t, js, 2*users, func(i int) *nats.Msg {
		return rsMsg("sse.demo."+user(i)+".live", "live"+strconv.Itoa(i))
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
			evs, err := rsReadUntil(ss.s, time.Minute, func(ev sseEvent) bool { return rsID(ev) >= stop })
			if err != nil {
				errs[k] = err
				return
			}
			var got []uint64
			for _, ev := range evs {
				got = append(got, rsID(ev))
			}
			if !slices.Equal(got, want) {
				errs[k] = fmt.Errorf("%s from %d: %s", ss.user, ss.from, rsDiff(got, want))
			}
		})
	}
	wg.Wait()
	for k, err := range errs {
		if err != nil {
			t.Errorf("session %d: %v", k, err)
		}
	}
	if n := rsMetric(t, e, "sserelay_replays_total"); n != sessions {
		t.Errorf("sserelay_replays_total = %v, want %d", n, sessions)
	}
}

// ---------------------------------------------------------------------------
// 5. The relay's NATS connection drops and comes back.

// rsRestartEnv is a testEnv whose NATS server listens on a fixed port and
// can be stopped and started again on it, with the same store directory.
type rsRestartEnv struct {
	*testEnv
	dir, addr string
}

// rsEnvOptions configure newRsEnv.
type rsEnvOptions struct {
	stream StreamOptions
	config func(*Config)
	// history runs after the stream exists and before the relay starts:
	// events published there are in the store, and the relay never
	// dispatches them (it starts after the stream's last sequence), as for
	// a relay instance that comes up after its clients' events were stored.
	history func(e *testEnv)
}

// newRsEnv is newEnv with a fixed NATS port, a history hook, and its own
// relay config; it takes testing.TB so that benchmarks use it too.
func newRsEnv(t testing.TB, o rsEnvOptions) *rsRestartEnv {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	r := &rsRestartEnv{testEnv: &testEnv{t: t, stream: o.stream}, dir: t.TempDir(), addr: addr}
	r.startNATS()
	t.Cleanup(func() {
		if r.ns != nil {
			r.ns.Shutdown()
		}
	})
	opts := []nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(50 * time.Millisecond), nats.Timeout(5 * time.Second)}
	if r.nc, err = nats.Connect("nats://"+addr, append(opts, nats.ReconnectBufSize(-1))...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.nc.Close)
	if r.pub, err = nats.Connect("nats://"+addr, opts...); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.pub.Close)
	r.js, _ = jetstream.New(r.pub)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := EnsureStream(ctx, r.js, r.stream); err != nil {
		t.Fatal(err)
	}
	if o.history != nil {
		o.history(r.testEnv)
	}
	cfg := Config{Conn: r.nc, Verifier: mustVerifier(t), Logger: testLogger(t), Keepalive: time.Hour}
	if o.config != nil {
		o.config(&cfg)
	}
	if r.relay, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	if err := r.relay.Start(ctx); err != nil {
		t.Fatal(err)
	}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.srv = &http.Server{Handler: r.relay.Handler(), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = r.srv.Serve(hl) }()
	r.url = "http://" + hl.Addr().String()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		r.relay.Drain()
		_ = r.srv.Shutdown(ctx)
		if err := r.relay.Shutdown(ctx); err != nil {
			t.Errorf("relay shutdown: %v", err)
		}
	})
	return r
}

func (r *rsRestartEnv) startNATS() {
	r.t.Helper()
	var err error
	for range 50 { // the port may take a moment to be free again
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		r.ns, err = embedded.Start(ctx, embedded.Options{StoreDir: r.dir, Listen: r.addr})
		cancel()
		if err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	r.t.Fatalf("start NATS on %s: %v", r.addr, err)
}

func (r *rsRestartEnv) restartNATS() {
	r.t.Helper()
	r.ns.Shutdown()
	r.ns = nil
	r.startNATS()
}

// publishRetry publishes with a de-duplication id until JetStream acks it,
// so that a retry after a lost ack does not store the event twice.
func (r *rsRestartEnv) publishRetry(subject, data string) uint64 {
	r.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		ack, err := r.js.PublishMsg(ctx, rsMsg(subject, data, HeaderMsgID, subject+"/"+data))
		cancel()
		if err == nil {
			return ack.Sequence
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("publish %s: %v", subject, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestReconnectNATSRestart: the NATS server restarts under open streams;
// the relay's connection reconnects, its consumer resumes after its cursor,
// and every stream gets every event exactly once, with nothing but a delay.
func TestReconnectNATSRestart(t *testing.T) {
	// Ring off: the resume after the restart reads the restored store.
	e := newRsEnv(t, rsEnvOptions{config: func(c *Config) { c.RingEvents = -1 }})
	alice, bob := token(t, "alice"), token(t, "bob")
	b0 := e.publishRetry("sse.demo.bob", "b0")
	b1 := e.publishRetry("sse.demo.bob.t1", "b1")
	e.waitCursor(b1)

	aAll := e.open("app_id=demo", bearer(alice))
	aAll.Connected(t)
	aT1 := e.open("app_id=demo&topic=t1", bearer(alice))
	aT1.Connected(t)
	h := bearer(bob)
	h.Set("Last-Event-ID", strconv.FormatUint(b0, 10))
	bRes := e.open("app_id=demo", h)
	bRes.Connected(t)

	type ev struct {
		seq       uint64
		alice, t1 bool
		bob       bool
	}
	var evs []ev
	pub := func(phase string, n int) {
		for i := range n {
			var x ev
			switch i % 4 {
			case 0:
				x = ev{seq: e.publishRetry("sse.demo.alice", phase+strconv.Itoa(i)), alice: true}
			case 1:
				x = ev{seq: e.publishRetry("sse.demo.alice.t1", phase+strconv.Itoa(i)), alice: true, t1: true}
			case 2:
				x = ev{seq: e.publishRetry("sse.demo.bob.t2", phase+strconv.Itoa(i)), bob: true}
			default:
				x = ev{seq: e.publishRetry("sse.demo.alice.t2", phase+strconv.Itoa(i)), alice: true}
			}
			evs = append(evs, x)
		}
	}
	ids := func(from int, f func(ev) bool) []uint64 {
		var out []uint64
		for _, x := range evs[from:] {
			if f(x) {
				out = append(out, x.seq)
			}
		}
		return out
	}
	isAlice := func(x ev) bool { return x.alice }
	isT1 := func(x ev) bool { return x.t1 }
	isBob := func(x ev) bool { return x.bob }

	// Before: delivered live.
	pub("before", 8)
	rsExpectIDs(t, aAll, 30*time.Second, ids(0, isAlice)...)
	rsExpectIDs(t, aT1, 30*time.Second, ids(0, isT1)...)
	rsExpectIDs(t, bRes, 30*time.Second, append([]uint64{b1}, ids(0, isBob)...)...)

	// Right before the restart: stored, perhaps not dispatched yet.
	mark := len(evs)
	pub("edge", 8)
	e.restartNATS()
	rsWaitFor(t, 30*time.Second, "the relay to be ready again", func() bool {
		return e.relay.Ready() == nil && e.pub.IsConnected()
	})
	pub("after", 12)

	rsExpectIDs(t, aAll, time.Minute, ids(mark, isAlice)...)
	rsExpectIDs(t, aT1, time.Minute, ids(mark, isT1)...)
	rsExpectIDs(t, bRes, time.Minute, ids(mark, isBob)...)

	// A resume across the restart reads the restored store.
	h = bearer(alice)
	h.Set("Last-Event-ID", "0")
	late := e.open("app_id=demo", h)
	late.Connected(t)
	rsExpectIDs(t, late, time.Minute, ids(0, isAlice)...)

	// And the live path still works for everyone.
	mark = len(evs)
	pub("last", 4)
	rsExpectIDs(t, aAll, time.Minute, ids(mark, isAlice)...)
	rsExpectIDs(t, aT1, time.Minute, ids(mark, isT1)...)
	rsExpectIDs(t, bRes, time.Minute, ids(mark, isBob)...)
	rsExpectIDs(t, late, time.Minute, ids(mark, isAlice)...)
	if n := rsMetric(t, e.testEnv, `sserelay_resets_total{reason="history-gone"}`); n != 0 {
		t.Fatalf("history-gone resets = %v, want 0", n)
	}
	if e.nc.Stats().Reconnects == 0 {
		t.Fatal("the relay's connection never reconnected: the test restarted nothing")
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
	seqs := rsPublishFast(t, e, n, func(i int) *nats.Msg { return rsMsg("sse.demo.alice", "e"+strconv.Itoa(i)) })
	e.waitCursor(seqs[n-1])
	before := e.nc.Stats().InMsgs
	h := bearer(token(t, "alice"))
	h.Set("Last-Event-ID", "0")
	s := e.open("app_id=demo", h)
	s.Connected(t)
	rsExpectIDs(t, s, time.Minute, seqs...)
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
