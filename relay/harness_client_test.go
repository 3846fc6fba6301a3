package relay

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sserelay/sserelay/relay/sse"
	"github.com/sserelay/sserelay/relay/sse/ssetest"
)

// ---- plain HTTP answers

// httpResult is a complete (non-stream) HTTP answer.
type httpResult struct {
	Status int
	Header http.Header
	Body   []byte
}

// do sends one request and reads the whole answer. hdr may be nil.
func do(t testing.TB, method, u string, hdr http.Header, body string) httpResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, u, err)
	}
	return httpResult{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// getEvents sends GET /v1/events?query for an answer that is not a stream
// (an error, a poll, or a stream the relay sends away and closes).
func (e *testEnv) getEvents(t testing.TB, query string, hdr http.Header) httpResult {
	t.Helper()
	return do(t, http.MethodGet, e.url+"/v1/events?"+query, hdr, "")
}

// wantError checks an error answer: status, JSON content type and exactly
// the body {"error":msg}.
func wantError(t testing.TB, r httpResult, status int, msg string) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status %d, want %d (body %s)", r.Status, status, r.Body)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q, want application/json", ct)
	}
	want, _ := json.Marshal(map[string]string{"error": msg})
	if got := bytes.TrimSuffix(r.Body, []byte("\n")); !bytes.Equal(got, want) {
		t.Fatalf("body\n got %s\nwant %s", got, want)
	}
}

// wantJSON checks a 200 JSON answer whose body is exactly want (compact).
func wantJSON(t testing.TB, r httpResult, want string) {
	t.Helper()
	if r.Status != http.StatusOK {
		t.Fatalf("status %d, want 200 (body %s)", r.Status, r.Body)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("Content-Type %q, want application/json", ct)
	}
	if got := string(bytes.TrimSuffix(r.Body, []byte("\n"))); got != want {
		t.Fatalf("body\n got %s\nwant %s", got, want)
	}
}

// wantRetryOnly checks that rest is exactly a retry hint field with the
// configured delay plus jitter (default Retry 2 s: 2000 to 4000 ms), after
// an optional comment line.
func wantRetryOnly(t testing.TB, rest, comment string) {
	t.Helper()
	if comment != "" {
		var ok bool
		rest, ok = strings.CutPrefix(rest, ": "+comment+"\n")
		if !ok {
			t.Fatalf("stream ends with %q, want a %q comment first", rest, comment)
		}
	}
	v, ok := strings.CutPrefix(rest, "retry: ")
	if !ok || !strings.HasSuffix(v, "\n") || strings.HasSuffix(v, "\n\n") {
		t.Fatalf("stream ends with %q, want exactly a retry field with no blank line after it", rest)
	}
	ms, err := strconv.Atoi(strings.TrimSuffix(v, "\n"))
	if err != nil || ms < 2000 || ms > 4000 {
		t.Fatalf("retry hint %q, want 2000 to 4000 ms", v)
	}
}

func bearer(tok string) http.Header {
	return http.Header{"Authorization": {"Bearer " + tok}}
}

// ---- poll=1

// pollAnswer is the answer of poll=1.
type pollAnswer struct {
	Events []struct {
		ID    string `json:"id"`
		Event string `json:"event"`
		Data  string `json:"data"`
	} `json:"events"`
	LastEventID string `json:"last_event_id"`
	Reset       string `json:"reset"`
}

// poll sends a poll=1 request (query includes it) and decodes the answer
// strictly.
func (e *testEnv) poll(t testing.TB, query string, hdr http.Header) pollAnswer {
	t.Helper()
	r := e.getEvents(t, query, hdr)
	if r.Status != http.StatusOK || r.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("poll %s: %d %q %s", query, r.Status, r.Header.Get("Content-Type"), r.Body)
	}
	if r.Header.Get("X-Connection-Id") == "" {
		t.Fatalf("poll %s: no X-Connection-Id", query)
	}
	var p pollAnswer
	dec := json.NewDecoder(bytes.NewReader(r.Body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		t.Fatalf("poll %s: %s: %v", query, r.Body, err)
	}
	if p.Events == nil {
		t.Fatalf("poll %s: events is null, want a list: %s", query, r.Body)
	}
	return p
}

// ---- the SSE client

// sseEvent is one block as the spec decoder (relay/sse) reads it.
type sseEvent struct {
	ID    string // the block's own id field ("" if none)
	HasID bool
	Event string
	Data  string
	Retry string // the block's retry field in ms ("" if none)
}

func blockEvent(b sse.Block) sseEvent {
	ev := sseEvent{HasID: b.HasID, Event: b.Event.Type, Data: b.Event.Data}
	if b.HasID {
		ev.ID = b.Event.ID
	}
	if b.HasRetry {
		ev.Retry = strconv.FormatInt(b.Retry.Milliseconds(), 10)
	}
	return ev
}

// evID returns the decimal id of ev (0 if it has none).
func evID(ev sseEvent) uint64 {
	n, _ := strconv.ParseUint(ev.ID, 10, 64)
	return n
}

// sseStream is a stream being read by the test client (relay/sse/ssetest):
// a cursor over the events in order, and the exact bytes received.
type sseStream struct {
	*ssetest.Stream
	Resp *http.Response
	mark int // where line and byte reads (linesUntil, readN) go on from
}

// open starts GET /v1/events?query with the given headers; it fails the
// test unless the answer is a 200 event stream.
func (e *testEnv) open(query string, hdr http.Header) *sseStream {
	e.t.Helper()
	s, err := e.tryOpen(query, hdr)
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

// resume opens GET /v1/events?query with tok and Last-Event-ID: id, and
// reads its sserelay.connected event, which must carry no id (a resume's
// position is the client's, not the relay's).
func (e *testEnv) resume(query, tok string, id uint64) *sseStream {
	e.t.Helper()
	h := bearer(tok)
	h.Set("Last-Event-ID", strconv.FormatUint(id, 10))
	s := e.open(query, h)
	if ev := s.Connected(e.t); ev.HasID {
		e.t.Fatalf("connected after Last-Event-ID carries id: %+v", ev)
	}
	return s
}

// tryOpen is open that returns the error; the stream is closed at cleanup.
func (e *testEnv) tryOpen(query string, hdr http.Header) (*sseStream, error) {
	return openURL(e.t, nil, e.url+"/v1/events?"+query, hdr)
}

// openURL opens a stream at u with client (nil: the default client).
func openURL(t testing.TB, client *http.Client, u string, hdr http.Header) (*sseStream, error) {
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	st, err := ssetest.Open(client, req)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	t.Cleanup(st.Close)
	return &sseStream{Stream: st, Resp: st.Response}, nil
}

// smallRcvBuf is the receive buffer of a client that stops reading. Not
// smaller: with a buffer far below the loopback MSS (64 KiB) the sender stays
// window-limited after the client reads again (measured with 4 KiB: snd_wnd
// 8192, persist timer running, rwnd_limited 100%, a 4 MB catch-up crawling
// for minutes). That is the kernel, not the relay.
const smallRcvBuf = 256 << 10

// openRaw opens GET /v1/events?query over a plain TCP connection with a
// receive buffer of rcvBuf bytes (0: the default) and a client that reads
// only while the test waits for events: between reads the events stay in
// the socket, so that a test can play a client that stops reading.
func (e *testEnv) openRaw(t testing.TB, query string, hdr http.Header, rcvBuf int) *sseStream {
	t.Helper()
	resp, conn := dialStream(t, e, query, hdr, rcvBuf)
	st := ssetest.NewOnDemand(connBody{resp.Body, conn})
	t.Cleanup(st.Close)
	return &sseStream{Stream: st, Resp: resp}
}

// dialStream sends the stream request on a new TCP connection and reads
// the response header; the body is left unread.
func dialStream(t testing.TB, e *testEnv, query string, hdr http.Header, rcvBuf int) (*http.Response, net.Conn) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", strings.TrimPrefix(e.url, "http://"), 10*time.Second)
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
	return resp, conn
}

// connBody closes the connection, not the body: closing an unfinished body
// of http.ReadResponse would read it to its end, which a stream has not.
type connBody struct {
	io.Reader
	conn net.Conn
}

func (b connBody) Close() error { return b.conn.Close() }

// errNoEvent is what Next returns when its timeout passes.
var errNoEvent = errors.New("no event")

// Next returns the next block that carries data: blocks with only retry,
// an id or comments are skipped, as a browser does. After timeout it
// returns an error wrapping errNoEvent, and the stream stays open.
func (s *sseStream) Next(timeout time.Duration) (sseEvent, error) {
	b, err := s.Stream.Next(timeout)
	if errors.Is(err, ssetest.ErrTimeout) {
		return sseEvent{}, fmt.Errorf("%w within %s", errNoEvent, timeout)
	}
	if err != nil {
		return sseEvent{}, err
	}
	return blockEvent(b), nil
}

// MustNext returns the next event or fails the test.
func (s *sseStream) MustNext(t testing.TB) sseEvent {
	t.Helper()
	ev, err := s.Next(waitLong)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// Connected reads the sserelay.connected event that opens every stream.
func (s *sseStream) Connected(t testing.TB) sseEvent {
	t.Helper()
	ev := s.MustNext(t)
	if ev.Event != EventConnected {
		t.Fatalf("first event = %+v, want %s", ev, EventConnected)
	}
	return ev
}

// helloData is the data of the sserelay.connected event.
type helloData struct {
	ConnectionID string `json:"connection_id"`
	User         string `json:"user"`
	AppID        string `json:"app_id"`
}

// Hello reads the connected event and decodes its data strictly.
func (s *sseStream) Hello(t testing.TB) helloData {
	t.Helper()
	ev := s.Connected(t)
	var h helloData
	dec := json.NewDecoder(strings.NewReader(ev.Data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&h); err != nil {
		t.Fatalf("connected data %q: %v", ev.Data, err)
	}
	return h
}

// ExpectNext reads the next event and checks its id, name and data.
func (s *sseStream) ExpectNext(t testing.TB, id uint64, event, data string) {
	t.Helper()
	ev := s.MustNext(t)
	if ev.ID != strconv.FormatUint(id, 10) || ev.Event != event || ev.Data != data {
		t.Fatalf("got %+v, want id %d event %q data %q", ev, id, event, data)
	}
}

// ExpectIDs reads len(want) events and checks that their ids are exactly
// want and that none is a reset; it returns them. The deadline is a hang
// guard for all of them together.
func (s *sseStream) ExpectIDs(t testing.TB, want ...uint64) []sseEvent {
	t.Helper()
	if len(want) == 0 {
		return nil
	}
	n := 0
	evs, err := s.ReadUntil(2*time.Minute, func(sseEvent) bool { n++; return n == len(want) })
	got := make([]uint64, len(evs))
	for i, ev := range evs {
		got[i] = evID(ev)
		if ev.Event == EventReset {
			t.Fatalf("event %d: unexpected reset %+v", i, ev)
		}
	}
	if err != nil {
		t.Fatalf("got ids %v, want %v: %v", got, want, err)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("ids: %s", diffIDs(got, want))
	}
	return evs
}

// ExpectQuiet checks that no event arrives within d (or that the stream
// ends).
func (s *sseStream) ExpectQuiet(t testing.TB, d time.Duration) {
	t.Helper()
	ev, err := s.Next(d)
	if err == nil {
		t.Fatalf("unexpected event %+v", ev)
	}
	if !errors.Is(err, errNoEvent) && !errors.Is(err, io.EOF) {
		t.Fatalf("stream error: %v", err)
	}
}

// ReadUntil reads events until stop returns true, for at most d in all.
func (s *sseStream) ReadUntil(d time.Duration, stop func(sseEvent) bool) ([]sseEvent, error) {
	deadline := time.Now().Add(d)
	var evs []sseEvent
	for {
		ev, err := s.Next(time.Until(deadline))
		if err != nil {
			return evs, fmt.Errorf("after %d events: %w", len(evs), err)
		}
		evs = append(evs, ev)
		if stop(ev) {
			return evs, nil
		}
	}
}

// expectReset checks that ev is a sserelay.reset with reason and id.
func expectReset(t testing.TB, ev sseEvent, reason string, id uint64) {
	t.Helper()
	var body struct {
		Reason string `json:"reason"`
	}
	if ev.Event != EventReset || json.Unmarshal([]byte(ev.Data), &body) != nil || body.Reason != reason {
		t.Fatalf("got %+v, want %s with reason %q", ev, EventReset, reason)
	}
	if !ev.HasID || evID(ev) != id {
		t.Fatalf("reset %+v: want id %d (the cursor)", ev, id)
	}
}

// ReadRest waits until the relay ends the stream cleanly and returns the
// bytes after the last event the cursor read (or after the last line or
// bytes read, if those came later).
func (s *sseStream) ReadRest(t testing.TB) string {
	t.Helper()
	select {
	case <-s.Done():
	case <-time.After(waitLong):
		s.Close()
		t.Fatalf("stream still open after %s (read %q)", waitLong, s.Raw()[s.from():])
	}
	if err := s.Err(); err != io.EOF {
		t.Fatalf("stream did not end cleanly: %v (read %q)", err, s.Raw()[s.from():])
	}
	return s.Raw()[s.from():]
}

func (s *sseStream) from() int { return max(s.mark, s.Offset()) }

// LinesUntil reads lines after the last event or line read until one
// equals want, and returns the lines before it.
func (s *sseStream) LinesUntil(t testing.TB, want string) []string {
	t.Helper()
	from := s.from()
	var lines []string
	raw, err := s.WaitRaw(waitLong, func(raw string) bool {
		lines = nil
		rest := raw[from:]
		for {
			line, after, ok := strings.Cut(rest, "\n")
			if !ok {
				return false
			}
			if line == want {
				s.mark = len(raw) - len(after)
				return true
			}
			lines = append(lines, line)
			rest = after
		}
	})
	if err != nil {
		t.Fatalf("waiting for line %q: %v after %q", want, err, raw[from:])
	}
	return lines
}

// ReadN returns the next n bytes after the last event, line or bytes read.
func (s *sseStream) ReadN(t testing.TB, n int) string {
	t.Helper()
	from := s.from()
	raw, err := s.WaitRaw(waitLong, func(raw string) bool { return len(raw) >= from+n })
	if err != nil {
		t.Fatalf("no %d bytes: %v (got %q)", n, err, raw[from:])
	}
	s.mark = from + n
	return raw[from : from+n]
}

// diffIDs describes the first difference of two id lists.
func diffIDs(got, want []uint64) string {
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

// itoa formats a sequence as the SSE id field carries it.
func itoa(n uint64) string { return strconv.FormatUint(n, 10) }
