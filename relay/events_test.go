package relay

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/sserelay/sserelay/relay/auth"
)

// Helpers of events_test.go, publish_test.go and exclusion_test.go carry the
// prefix "ep" so that they cannot collide with other test files of the package.

// epResult is a complete (non-stream) HTTP answer.
type epResult struct {
	Status int
	Header http.Header
	Body   []byte
}

// epDo sends one request and reads the whole answer. hdr may be nil.
func epDo(t testing.TB, method, u string, hdr http.Header, body string) epResult {
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
	return epResult{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// epGetEvents sends GET /v1/events?query for an answer that is not a stream
// (an error, a poll, or a stream the relay sends away and closes).
func (e *testEnv) epGetEvents(t testing.TB, query string, hdr http.Header) epResult {
	t.Helper()
	return epDo(t, http.MethodGet, e.url+"/v1/events?"+query, hdr, "")
}

// epWantError checks an error answer: status, JSON content type and exactly
// the body {"error":msg}.
func epWantError(t testing.TB, r epResult, status int, msg string) {
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

// epWantJSON checks a 200 JSON answer whose body is exactly want (compact).
func epWantJSON(t testing.TB, r epResult, want string) {
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

// Token claim edits.
func epApps(apps ...string) func(*auth.Claims) {
	if apps == nil {
		apps = []string{} // an empty list grants no app; nil would grant any
	}
	return func(c *auth.Claims) { c.Apps = apps }
}
func epFeeds(feeds ...string) func(*auth.Claims) {
	return func(c *auth.Claims) { c.Feeds = feeds }
}
func epPublishTo(apps ...string) func(*auth.Claims) {
	return func(c *auth.Claims) { c.Publish = apps }
}
func epExpires(at time.Time) func(*auth.Claims) {
	return func(c *auth.Claims) { c.ExpiresAt = jwt.NewNumericDate(at) }
}

// epMetric returns the value of a sample of GET /metrics: name, or
// name{label="value"} (the sum of the samples that carry those labels).
func (e *testEnv) epMetric(name string) float64 {
	e.t.Helper()
	return e.scrape().value(e.t, name)
}

// epEventually polls cond until it holds or 10 s pass.
func epEventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// epWaitOpen waits until the relay counts n open streams.
func (e *testEnv) epWaitOpen(n int) {
	e.t.Helper()
	epEventually(e.t, fmt.Sprintf("%d open streams", n), func() bool { return e.relay.OpenStreams() == n })
}

// epReadRest reads what is left of a stream until the relay closes it.
func epReadRest(t testing.TB, s *sseStream) string {
	t.Helper()
	type result struct {
		b   []byte
		err error
	}
	ch := make(chan result, 1)
	go func() {
		b, err := io.ReadAll(s.br)
		ch <- result{b, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("stream did not end cleanly: %v (read %q)", r.err, r.b)
		}
		return string(r.b)
	case <-time.After(10 * time.Second):
		s.Close()
		r := <-ch
		t.Fatalf("stream still open after 10 s (read %q)", r.b)
		return ""
	}
}

// epReadLinesUntil reads lines of a stream until one equals want and
// returns the lines read before it.
func epReadLinesUntil(t testing.TB, s *sseStream, want string) []string {
	t.Helper()
	ch := make(chan []string, 1)
	errc := make(chan error, 1)
	go func() {
		var lines []string
		for {
			line, err := s.br.ReadString('\n')
			if err != nil {
				errc <- fmt.Errorf("%w after %q", err, lines)
				return
			}
			line = strings.TrimSuffix(line, "\n")
			if line == want {
				ch <- lines
				return
			}
			lines = append(lines, line)
		}
	}()
	select {
	case lines := <-ch:
		return lines
	case err := <-errc:
		t.Fatalf("waiting for line %q: %v", want, err)
	case <-time.After(10 * time.Second):
		s.Close()
		t.Fatalf("no line %q within 10 s: %v", want, <-errc)
	}
	return nil
}

// epHello is the data of the sserelay.connected event.
type epHello struct {
	ConnectionID string `json:"connection_id"`
	User         string `json:"user"`
	AppID        string `json:"app_id"`
}

// epConnected reads the connected event and decodes its data strictly.
func epConnected(t testing.TB, s *sseStream) epHello {
	t.Helper()
	ev := s.Connected(t)
	var h epHello
	dec := json.NewDecoder(strings.NewReader(ev.Data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&h); err != nil {
		t.Fatalf("connected data %q: %v", ev.Data, err)
	}
	return h
}

// epNext reads the next event and checks its id, name and data.
func epNext(t testing.TB, s *sseStream, id uint64, event, data string) {
	t.Helper()
	ev := s.MustNext(t)
	if ev.ID != strconv.FormatUint(id, 10) || ev.Event != event || ev.Data != data {
		t.Fatalf("got %+v, want id %d event %q data %q", ev, id, event, data)
	}
}

// epRetryOnly checks that rest is exactly a retry hint block with the
// configured delay plus jitter (default Retry 2 s: 2000 to 4000 ms), after
// an optional comment line.
func epRetryOnly(t testing.TB, rest, comment string) {
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

// epRawHPub publishes through a hand-written NATS protocol connection, so
// that the header block is sent exactly as given (nats.go replaces CR and LF
// in header values with spaces). It returns the stream sequence.
func (e *testEnv) epRawHPub(subject, hdrBlock, payload string) uint64 {
	e.t.Helper()
	u, err := url.Parse(e.ns.ClientURL())
	if err != nil {
		e.t.Fatal(err)
	}
	conn, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
	if err != nil {
		e.t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(conn)
	if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "INFO ") {
		e.t.Fatalf("raw NATS: %q %v", line, err)
	}
	hdr := "NATS/1.0\r\n" + hdrBlock + "\r\n"
	fmt.Fprintf(conn, "CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true,\"no_responders\":true,\"protocol\":1}\r\n"+
		"SUB _EP.ack 1\r\nHPUB %s _EP.ack %d %d\r\n%s%s\r\nPING\r\n", subject, len(hdr), len(hdr)+len(payload), hdr, payload)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			e.t.Fatalf("raw NATS: %v", err)
		}
		switch {
		case strings.HasPrefix(line, "PING"):
			_, _ = io.WriteString(conn, "PONG\r\n")
		case strings.HasPrefix(line, "-ERR"):
			e.t.Fatalf("raw NATS: %s", line)
		case strings.HasPrefix(line, "MSG "):
			f := strings.Fields(line)
			n, _ := strconv.Atoi(f[len(f)-1])
			body := make([]byte, n+2)
			if _, err := io.ReadFull(br, body); err != nil {
				e.t.Fatal(err)
			}
			var ack struct {
				Seq   uint64 `json:"seq"`
				Error any    `json:"error"`
			}
			if err := json.Unmarshal(body[:n], &ack); err != nil || ack.Seq == 0 {
				e.t.Fatalf("raw NATS ack %q: %v", body[:n], err)
			}
			return ack.Seq
		}
	}
}

func TestEventsStreamHeadersAndConnected(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := e.open("app_id=demo", bearer(token(t, "alice")))
	h := s.Resp.Header
	for name, want := range map[string]string{
		"Content-Type":      "text/event-stream",
		"Cache-Control":     "no-cache",
		"X-Accel-Buffering": "no",
	} {
		if got := h.Values(name); len(got) != 1 || got[0] != want {
			t.Errorf("%s = %q, want exactly %q", name, got, want)
		}
	}
	hello := epConnected(t, s)
	if hello.User != "alice" || hello.AppID != "demo" || hello.ConnectionID == "" {
		t.Fatalf("connected %+v", hello)
	}
	if got := h.Get("X-Connection-Id"); got != hello.ConnectionID {
		t.Fatalf("X-Connection-Id %q, connected event says %q", got, hello.ConnectionID)
	}
}

// TestEventsWireBytes reads the raw response: a retry line, the connected
// event with id C, and a live event whose CR, LF and CRLF line ends become
// separate data lines ending in LF.
func TestEventsWireBytes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.url+"/v1/events?app_id=demo", nil)
	req.Header.Set("Authorization", "Bearer "+token(t, "alice"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	readN := func(n int) string {
		t.Helper()
		buf := make([]byte, n)
		done := make(chan error, 1)
		go func() { _, err := io.ReadFull(resp.Body, buf); done <- err }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("read %d bytes: %v (got %q)", n, err, buf)
			}
		case <-time.After(10 * time.Second):
			cancel()
			<-done
			t.Fatalf("no %d bytes within 10 s (got %q)", n, buf)
		}
		return string(buf)
	}
	cid := resp.Header.Get("X-Connection-Id")
	want := "retry: 2000\n" +
		"id: 0\nevent: sserelay.connected\ndata: {\"app_id\":\"demo\",\"connection_id\":\"" + cid + "\",\"user\":\"alice\"}\n\n"
	if got := readN(len(want)); got != want {
		t.Fatalf("stream starts with\n%q\nwant\n%q", got, want)
	}
	seq := e.publish("sse.demo.alice.orders", "a\rb\nc\r\nd\r\n\re\n", HeaderEvent, "order.created")
	want = "id: " + strconv.FormatUint(seq, 10) + "\nevent: order.created\n" +
		"data: a\ndata: b\ndata: c\ndata: d\ndata:\ndata: e\ndata:\n\n"
	if got := readN(len(want)); got != want {
		t.Fatalf("live event\n%q\nwant\n%q", got, want)
	}
	// No Sse-Event header: no event line, so EventSource.onmessage gets it.
	seq = e.publish("sse.demo.alice", `{"x":1}`)
	want = "id: " + strconv.FormatUint(seq, 10) + "\ndata: {\"x\":1}\n\n"
	if got := readN(len(want)); got != want {
		t.Fatalf("unnamed event\n%q\nwant\n%q", got, want)
	}
}

// TestEventsNetHTTPPath runs a stream through net/http (NoHijack, as for
// HTTP/2) rather than on a taken-over connection: same headers, events,
// keepalives, drain and release.
func TestEventsNetHTTPPath(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *Config) { c.NoHijack = true; c.Keepalive = 50 * time.Millisecond }))
	tok := token(t, "alice")
	s := e.open("app_id=demo", bearer(tok))
	if !slices.Contains(s.Resp.TransferEncoding, "chunked") {
		t.Fatalf("NoHijack stream is not chunked (transfer encoding %v): not served by net/http", s.Resp.TransferEncoding)
	}
	for name, want := range map[string]string{"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"} {
		if got := s.Resp.Header.Values(name); len(got) != 1 || got[0] != want {
			t.Errorf("%s = %q, want exactly %q", name, got, want)
		}
	}
	hello := epConnected(t, s)
	if hello.User != "alice" || hello.ConnectionID != s.Resp.Header.Get("X-Connection-Id") {
		t.Fatalf("connected %+v, X-Connection-Id %q", hello, s.Resp.Header.Get("X-Connection-Id"))
	}
	epReadLinesUntil(t, s, ": keepalive")
	seq := e.publish("sse.demo.alice", "a\r\nb", HeaderEvent, "x")
	epNext(t, s, seq, "x", "a\nb")

	gone := e.open("app_id=demo", bearer(tok))
	gone.Connected(t)
	e.epWaitOpen(2)
	gone.Close()
	e.epWaitOpen(1)

	e.relay.Drain()
	rest := epReadRest(t, s)
	// Keepalives may come before the final retry hint.
	for strings.HasPrefix(rest, ": keepalive\n") {
		rest = strings.TrimPrefix(rest, ": keepalive\n")
	}
	epRetryOnly(t, rest, "")
	e.epWaitOpen(0)
}

func TestEventsKeepalive(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *Config) { c.Keepalive = 50 * time.Millisecond }))
	s := e.open("app_id=demo", bearer(token(t, "alice")))
	s.Connected(t)
	before := epReadLinesUntil(t, s, ": keepalive")
	for _, l := range before {
		if l != "" {
			t.Fatalf("idle stream sent %q before the keepalive", l)
		}
	}
	// Keepalives go on while the stream stays idle, and events still flow.
	epReadLinesUntil(t, s, ": keepalive")
	seq := e.publish("sse.demo.alice", "after")
	epNext(t, s, seq, "", "after")
}

func TestEventsTokenSources(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	alice, bob := token(t, "alice"), token(t, "bob")
	open := func(query string, hdr http.Header) epHello {
		t.Helper()
		s := e.open(query, hdr)
		defer s.Close()
		return epConnected(t, s)
	}
	if h := open("app_id=demo", bearer(alice)); h.User != "alice" {
		t.Fatalf("Authorization header: user %q", h.User)
	}
	if h := open("app_id=demo&access_token="+alice, nil); h.User != "alice" {
		t.Fatalf("access_token query: user %q", h.User)
	}
	if h := open("app_id=demo", http.Header{"Cookie": {"sserelay_token=" + alice}}); h.User != "alice" {
		t.Fatalf("sserelay_token cookie: user %q", h.User)
	}
	// Header first, then query, then cookie.
	if h := open("app_id=demo&access_token="+bob, http.Header{"Authorization": {"Bearer " + alice}, "Cookie": {"sserelay_token=" + bob}}); h.User != "alice" {
		t.Fatalf("header must win over query and cookie: user %q", h.User)
	}
	if h := open("app_id=demo&access_token="+alice, http.Header{"Cookie": {"sserelay_token=" + bob}}); h.User != "alice" {
		t.Fatalf("query must win over cookie: user %q", h.User)
	}
}

// epUnsigned hand-crafts an alg none token for sub.
func epUnsigned(sub string) string {
	enc := base64.RawURLEncoding.EncodeToString
	payload, _ := json.Marshal(map[string]any{"sub": sub, "exp": time.Now().Add(time.Hour).Unix()})
	return enc([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + enc(payload) + "."
}

func TestEventsUnauthorized(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	otherSecret, err := auth.Sign([]byte("another-secret-0123456789abcdef"), auth.Claims{RegisteredClaims: jwt.RegisteredClaims{Subject: "alice"}})
	if err != nil {
		t.Fatal(err)
	}
	expired := token(t, "alice", epExpires(time.Now().Add(-time.Hour)))
	good := token(t, "alice")
	parts := strings.Split(good, ".")
	forged := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"mallory"}`)) + "." + parts[2]
	tests := []struct {
		name  string
		query string
		hdr   http.Header
		want  string
	}{
		{"no token", "app_id=demo", nil, "missing token: send Authorization: Bearer, the access_token parameter or the sserelay_token cookie"},
		{"not bearer", "app_id=demo", http.Header{"Authorization": {"Basic " + good}}, "missing token: send Authorization: Bearer, the access_token parameter or the sserelay_token cookie"},
		{"other secret", "app_id=demo", bearer(otherSecret), "token signature invalid"},
		{"payload swapped", "app_id=demo", bearer(forged), "token signature invalid"},
		{"expired", "app_id=demo", bearer(expired), "token expired"},
		{"alg none", "app_id=demo", bearer(epUnsigned("alice")), "token algorithm not allowed"},
		{"alg none in query", "app_id=demo&access_token=" + epUnsigned("alice"), nil, "token algorithm not allowed"},
		{"expired in cookie", "app_id=demo", http.Header{"Cookie": {"sserelay_token=" + expired}}, "token expired"},
		{"garbage", "app_id=demo", bearer("not-a-jwt"), "token malformed"},
		// Authentication comes before validation: no hint about the input to a stranger.
		{"no token, bad input", "app_id=a.b", nil, "missing token: send Authorization: Bearer, the access_token parameter or the sserelay_token cookie"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			epWantError(t, e.epGetEvents(t, tt.query, tt.hdr), http.StatusUnauthorized, tt.want)
		})
	}
	if got := e.epMetric("sserelay_streams_rejected_total"); got != float64(len(tests)) {
		t.Fatalf("sserelay_streams_rejected_total %v, want %d", got, len(tests))
	}
	if n := e.relay.OpenStreams(); n != 0 {
		t.Fatalf("%d open streams after refusals", n)
	}
}

func TestEventsBadRequest(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *Config) { c.MaxFeeds, c.MaxTopics = 2, 3 }))
	tokMsg := func(kind, v string) string {
		return "invalid subject token: " + kind + " " + strconv.Quote(v) + " must be 1 to 128 characters without '.', '*', '>', whitespace or control characters"
	}
	topicMsg := func(v string) string {
		return "invalid subject token: topic " + strconv.Quote(v) + " must be tokens of 1 to 128 characters joined by '.', without '*', '>', whitespace or control characters"
	}
	const idMsg = "last event id must be a decimal stream sequence"
	const connMsg = "connection_id must be 8 to 64 characters of [A-Za-z0-9_-]"
	q := url.QueryEscape
	type tc struct {
		name, query string
		hdr         http.Header
		want        string
	}
	tests := []tc{
		{"no app_id", "", nil, "app_id is required"},
		{"empty app_id", "app_id=", nil, "app_id is required"},
		{"app_id too long", "app_id=" + strings.Repeat("a", 129), nil, tokMsg("app_id", strings.Repeat("a", 129))},
		{"feed empty", "app_id=demo&feed=", nil, tokMsg("feed", "")},
		{"too many feeds", "app_id=demo&feed=alice&feed=f2&feed=f3", nil, "too many feeds (at most 2)"},
		{"too many topics", "app_id=demo&topic=a&topic=b&topic=c&topic=d", nil, "too many topics (at most 3)"},
		{"topic empty", "app_id=demo&topic=", nil, topicMsg("")},
		{"topic leading dot", "app_id=demo&topic=.a", nil, topicMsg(".a")},
		{"topic trailing dot", "app_id=demo&topic=a.", nil, topicMsg("a.")},
		{"topic double dot", "app_id=demo&topic=a..b", nil, topicMsg("a..b")},
		{"last_event_id abc", "app_id=demo&last_event_id=abc", nil, idMsg},
		{"last_event_id -1", "app_id=demo&last_event_id=-1", nil, idMsg},
		{"last_event_id +1", "app_id=demo&last_event_id=%2B1", nil, idMsg},
		{"last_event_id 21 digits", "app_id=demo&last_event_id=" + strings.Repeat("1", 21), nil, idMsg},
		{"last_event_id above uint64", "app_id=demo&last_event_id=99999999999999999999", nil, idMsg},
		{"last_event_id 1.5", "app_id=demo&last_event_id=1.5", nil, idMsg},
		{"Last-Event-ID header abc", "app_id=demo", http.Header{"Last-Event-Id": {"abc"}}, idMsg},
		{"Last-Event-ID header wins over a good query", "app_id=demo&last_event_id=1", http.Header{"Last-Event-Id": {"x1"}}, idMsg},
		{"connection_id 7 chars", "app_id=demo&connection_id=abcdefg", nil, connMsg},
		{"connection_id 65 chars", "app_id=demo&connection_id=" + strings.Repeat("a", 65), nil, connMsg},
		{"connection_id dot", "app_id=demo&connection_id=abcd.efgh", nil, connMsg},
		{"connection_id space", "app_id=demo&connection_id=" + q("abcd efgh"), nil, connMsg},
		{"connection_id plus", "app_id=demo&connection_id=" + q("abcd+efgh"), nil, connMsg},
		{"connection_id slash", "app_id=demo&connection_id=" + q("abcd/efgh"), nil, connMsg},
		{"connection_id unicode", "app_id=demo&connection_id=" + q("abcdéfgh"), nil, connMsg},
	}
	for _, bad := range []string{"a.b", "a*", "*", ">", "a>", "a b", "a\tb", "a\x01b", "a\x7fb", "a\nb", "a\u00a0b"} {
		tests = append(tests,
			tc{"app_id " + strconv.Quote(bad), "app_id=" + q(bad), nil, tokMsg("app_id", bad)},
			tc{"feed " + strconv.Quote(bad), "app_id=demo&feed=alice&feed=" + q(bad), nil, tokMsg("feed", bad)},
		)
		if bad != "a.b" { // a dotted topic is a topic path
			tests = append(tests, tc{"topic " + strconv.Quote(bad), "app_id=demo&topic=ok&topic=" + q(bad), nil, topicMsg(bad)})
		}
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A token that does not grant the app: validation comes before
			// authorization, so these are all 400, never 403.
			h := bearer(token(t, "alice", epApps("other")))
			for k, v := range tt.hdr {
				h[k] = v
			}
			epWantError(t, e.epGetEvents(t, tt.query, h), http.StatusBadRequest, tt.want)
		})
	}
	// The edges of the valid ranges are accepted.
	for _, query := range []string{
		"app_id=demo&connection_id=abcdefgh",
		"app_id=demo&connection_id=" + strings.Repeat("A-z_9", 12) + "abcd",
		"app_id=demo&last_event_id=18446744073709551615",
		"app_id=demo&last_event_id=",
		"app_id=demo&feed=alice&topic=a.b.c&topic=x&topic=y",
		"app_id=" + strings.Repeat("a", 128),
	} {
		t.Run("ok "+query, func(t *testing.T) {
			s, err := e.tryOpen(query, bearer(token(t, "alice")))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			s.Connected(t)
		})
	}
}

func TestEventsForbidden(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tests := []struct {
		name, query, tok, want string
	}{
		{"app not in apps", "app_id=demo", token(t, "alice", epApps("other", "more")), `token does not grant app "demo"`},
		{"empty apps claim", "app_id=demo", token(t, "alice", epApps()), `token does not grant app "demo"`},
		{"feed not granted", "app_id=demo&feed=team1", token(t, "alice"), `token does not grant feed "team1"`},
		{"other user's feed", "app_id=demo&feed=bob", token(t, "alice", epFeeds("team1")), `token does not grant feed "bob"`},
		{"one feed of several not granted", "app_id=demo&feed=alice&feed=team1&feed=team2", token(t, "alice", epFeeds("team1")), `token does not grant feed "team2"`},
		{"feed prefix is not a grant", "app_id=demo&feed=team", token(t, "alice", epFeeds("team1")), `token does not grant feed "team"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			epWantError(t, e.epGetEvents(t, tt.query, bearer(tt.tok)), http.StatusForbidden, tt.want)
		})
	}
	// The apps claim, when it lists the app, lets the stream open.
	s := e.open("app_id=demo", bearer(token(t, "alice", epApps("other", "demo"))))
	s.Connected(t)
}

func TestEventsTopicNarrowing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tok := token(t, "alice")
	s := e.open("app_id=demo&topic=orders", bearer(tok))
	s.Connected(t)
	all := e.open("app_id=demo", bearer(tok))
	all.Connected(t)

	var seqs []uint64
	pub := func(subj string) uint64 { seq := e.publish(subj, subj); seqs = append(seqs, seq); return seq }
	a := pub("sse.demo.alice.orders")
	b := pub("sse.demo.alice.orders.eu")
	pub("sse.demo.alice.ordersx")
	pub("sse.demo.alice")
	pub("sse.demo.alice.other.orders")
	pub("sse.demo.bob.orders")
	pub("sse.other.alice.orders")
	c := pub("sse.demo.alice.orders.eu.paris")
	// Events arrive in order: anything that leaked would come before c.
	s.ExpectIDs(t, a, b, c)
	all.ExpectIDs(t, seqs[0], seqs[1], seqs[2], seqs[3], seqs[4], c)

	// The same filter on a resume from the store.
	r := e.open("app_id=demo&topic=orders", http.Header{"Authorization": {"Bearer " + tok}, "Last-Event-Id": {"0"}})
	r.Connected(t)
	r.ExpectIDs(t, a, b, c)
	d := e.publish("sse.demo.alice.orders", "live")
	r.ExpectIDs(t, d)

	// Several topics, one of them a path.
	m := e.open("app_id=demo&topic=ordersx&topic=other.orders&last_event_id=0", bearer(tok))
	m.Connected(t)
	m.ExpectIDs(t, seqs[2], seqs[4])
}

// TestEventsOverlappingFilterOnce: a topic list whose subjects overlap
// (orders and orders.eu) or a feed listed twice must still deliver every
// event exactly once, live, on a resume and in a poll.
func TestEventsOverlappingFilterOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tok := token(t, "alice")
	ids := func(seqs []uint64) []string {
		var s []string
		for _, q := range seqs {
			s = append(s, strconv.FormatUint(q, 10))
		}
		return s
	}
	all := []uint64{e.publish("sse.demo.alice.orders.eu", "a"), e.publish("sse.demo.alice.orders", "b")}
	for _, query := range []string{
		"app_id=demo&topic=orders&topic=orders.eu",
		"app_id=demo&topic=orders&topic=orders",
		"app_id=demo&feed=alice&feed=alice",
	} {
		t.Run(query, func(t *testing.T) {
			e.waitCursor(all[len(all)-1])
			p := e.epPoll(t, query+"&poll=1&last_event_id=0", bearer(tok))
			var pollIDs []string
			for _, ev := range p.Events {
				pollIDs = append(pollIDs, ev.ID)
			}
			if want := ids(all); !slices.Equal(pollIDs, want) {
				t.Errorf("poll returned ids %v, want each once: %v", pollIDs, want)
			}
			live := e.open(query, bearer(tok))
			live.Connected(t)
			r := e.open(query+"&last_event_id=0", bearer(tok))
			r.Connected(t)
			c := e.publish("sse.demo.alice.orders.eu", "c")
			d := e.publish("sse.demo.alice.orders", "d")
			all = append(all, c, d)
			live.ExpectIDs(t, c, d)
			var got []string
			for range all {
				got = append(got, r.MustNext(t).ID)
			}
			if want := ids(all); !slices.Equal(got, want) {
				t.Errorf("resume delivered ids %v, want each once: %v", got, want)
			}
			live.Close()
			r.Close()
		})
	}
}

func TestEventsFeedsClaim(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tok := token(t, "alice", epFeeds("team1", "_all"))
	both := e.open("app_id=demo&feed=team1&feed=alice", bearer(tok))
	if h := epConnected(t, both); h.User != "alice" {
		t.Fatalf("connected %+v", h)
	}
	teamOnly := e.open("app_id=demo&feed=team1", bearer(tok))
	teamOnly.Connected(t)
	own := e.open("app_id=demo", bearer(tok)) // default: the token's own feed only
	own.Connected(t)

	t1 := e.publish("sse.demo.team1", "team")
	al := e.publish("sse.demo.alice.x", "alice")
	e.publish("sse.demo.team2", "other team")
	e.publish("sse.demo._all", "broadcast not asked for")
	t2 := e.publish("sse.demo.team1.chat", "team again")
	al2 := e.publish("sse.demo.alice", "alice again")
	both.ExpectIDs(t, t1, al, t2, al2)
	teamOnly.ExpectIDs(t, t1, t2)
	own.ExpectIDs(t, al, al2)

	// Without the claim the same request is refused.
	epWantError(t, e.epGetEvents(t, "app_id=demo&feed=team1&feed=alice", bearer(token(t, "alice"))),
		http.StatusForbidden, `token does not grant feed "team1"`)
}

func TestEventsUserIsolation(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	alice := e.open("app_id=demo", bearer(token(t, "alice")))
	alice.Connected(t)
	bob := e.open("app_id=demo", bearer(token(t, "bob")))
	if h := epConnected(t, bob); h.User != "bob" {
		t.Fatalf("connected %+v", h)
	}
	a1 := e.publish("sse.demo.alice", "secret 1")
	a2 := e.publish("sse.demo.alice.orders", "secret 2")
	e.publish("sse.other.bob", "bob in another app")
	e.publish("sse.demo.bobby", "another user with a longer name")
	b1 := e.publish("sse.demo.bob", "for bob")
	bob.ExpectIDs(t, b1)
	alice.ExpectIDs(t, a1, a2)

	// Resuming from the start gives bob only his own event too.
	r := e.open("app_id=demo&last_event_id=0", bearer(token(t, "bob")))
	r.Connected(t)
	r.ExpectIDs(t, b1)
	// A poll as well.
	p := e.epGetEvents(t, "app_id=demo&poll=1&last_event_id=0", bearer(token(t, "bob")))
	epWantJSON(t, p, `{"events":[{"id":"`+strconv.FormatUint(b1, 10)+`","data":"for bob"}],"last_event_id":"`+strconv.FormatUint(b1, 10)+`"}`)
	// And asking for alice's feed is refused.
	epWantError(t, e.epGetEvents(t, "app_id=demo&feed=alice", bearer(token(t, "bob"))), http.StatusForbidden, `token does not grant feed "alice"`)
}

// TestEventsBadEventNameDropped: an event whose Sse-Event header cannot be
// written safely is dropped (live and on replay), counted, and the cursor
// moves past it.
func TestEventsBadEventNameDropped(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tok := token(t, "alice")
	s := e.open("app_id=demo", bearer(tok))
	s.Connected(t)
	bad := []uint64{
		e.epRawHPub("sse.demo.alice", "Sse-Event: a\rb\r\n", "CR inside"),
		e.epRawHPub("sse.demo.alice", "Sse-Event: trailing\r\r\n", "CR at the end"),
		e.publish("sse.demo.alice", "NUL", HeaderEvent, "a\x00b"),
		e.publish("sse.demo.alice", "reserved", HeaderEvent, "sserelay.x"),
		e.publish("sse.demo.alice", "forged connected", HeaderEvent, EventConnected),
	}
	// A long name is writable: NATS publishers are not held to the HTTP rule.
	long := e.publish("sse.demo.alice", "long", HeaderEvent, strings.Repeat("e", 129))
	epNext(t, s, long, strings.Repeat("e", 129), "long")
	good := e.publish("sse.demo.alice", "fine", HeaderEvent, "ok")
	e.waitCursor(good)
	epNext(t, s, good, "ok", "fine")
	if got := e.epMetric("sserelay_events_dropped_total"); got != float64(len(bad)) {
		t.Fatalf("sserelay_events_dropped_total %v, want %d", got, len(bad))
	}
	if got := e.epMetric("sserelay_cursor"); got != float64(good) {
		t.Fatalf("sserelay_cursor %v, want %d", got, good)
	}
	// A resume from before them reads the store and drops them as well.
	r := e.open("app_id=demo", http.Header{"Authorization": {"Bearer " + tok}, "Last-Event-Id": {strconv.FormatUint(bad[0]-1, 10)}})
	r.Connected(t)
	epNext(t, r, long, strings.Repeat("e", 129), "long")
	epNext(t, r, good, "ok", "fine")
	p := e.epGetEvents(t, "app_id=demo&poll=1&last_event_id=0", bearer(tok))
	epWantJSON(t, p, `{"events":[{"id":"`+strconv.FormatUint(long, 10)+`","event":"`+strings.Repeat("e", 129)+`","data":"long"},{"id":"`+strconv.FormatUint(good, 10)+`","event":"ok","data":"fine"}],"last_event_id":"`+strconv.FormatUint(good, 10)+`"}`)
}

// TestEventsLFInSseEventHeader: an LF cannot travel inside a NATS header
// value (nats.go turns CR and LF into spaces; a raw LF ends the header line).
// A raw header block broken by a bare LF in Sse-Event ("Sse-Event: a\nb")
// cannot be decoded by nats.go, so the relay cannot tell it from a message
// without headers. Whatever it makes of it, no client may get a forged field,
// the events after it must flow, and a resume or a poll across it must work.
func TestEventsLFInSseEventHeader(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tok := token(t, "alice")
	s := e.open("app_id=demo", bearer(tok))
	s.Connected(t)
	bad := e.epRawHPub("sse.demo.alice", "Sse-Event: a\nb\r\n", "LF")
	good := e.publish("sse.demo.alice", "fine", HeaderEvent, "ok")
	collect := func(what string, s *sseStream) []string {
		t.Helper()
		var ids []string
		for {
			ev, err := s.Next(10 * time.Second)
			if err != nil {
				t.Fatalf("%s: %v after %v", what, err, ids)
			}
			if ev.Event == "a" || ev.Event == "b" || (ev.ID != strconv.FormatUint(bad, 10) && ev.ID != strconv.FormatUint(good, 10)) {
				t.Fatalf("%s: unsafe or forged event %+v", what, ev)
			}
			ids = append(ids, ev.ID)
			if ev.ID == strconv.FormatUint(good, 10) {
				return ids
			}
		}
	}
	live := collect("live", s)
	if len(live) > 1 {
		t.Logf("note: the undecodable event %d was delivered live (as an event without name)", bad)
	}
	r := e.open("app_id=demo&last_event_id=0", bearer(tok))
	r.Connected(t)
	// The relay may drop the undecodable event on a resume even where it
	// could not tell it apart live; it must not deliver anything else.
	for _, id := range collect("resume across the undecodable event", r) {
		if !slices.Contains(live, id) {
			t.Errorf("resume delivered %s, which the live stream did not (%v)", id, live)
		}
	}
	p := e.epGetEvents(t, "app_id=demo&poll=1&last_event_id=0", bearer(tok))
	if p.Status != http.StatusOK {
		t.Fatalf("poll across the undecodable event: %d %s", p.Status, p.Body)
	}
}

func TestEventsTokenExpiry(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// exp has one-second precision: this token expires 1 to 2 s from now.
	exp := time.Now().Add(2 * time.Second)
	s := e.open("app_id=demo", bearer(token(t, "alice", epExpires(exp))))
	s.Connected(t)
	seq := e.publish("sse.demo.alice", "before expiry")
	s.ExpectIDs(t, seq)
	ev := s.MustNext(t)
	if ev.Event != EventTokenExpired || ev.HasID || ev.Data != `{"reason":"token expired"}` {
		t.Fatalf("got %+v, want a %s event without id", ev, EventTokenExpired)
	}
	if now := time.Now(); now.Before(exp.Truncate(time.Second)) {
		t.Fatalf("token-expired sent at %v, before exp %v", now, exp.Truncate(time.Second))
	}
	if rest := epReadRest(t, s); rest != "" {
		t.Fatalf("after token-expired the stream sent %q", rest)
	}
	e.epWaitOpen(0)
	// A token without exp does not expire the stream.
	noExp := e.open("app_id=demo", bearer(token(t, "bob", func(c *auth.Claims) { c.ExpiresAt = nil })))
	noExp.Connected(t)
	seq = e.publish("sse.demo.bob", "still here")
	noExp.ExpectIDs(t, seq)
}

func TestEventsDrain(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tok := token(t, "alice")
	epWantJSON(t, epDo(t, http.MethodGet, e.url+"/readyz", nil, ""), `{"status":"ready"}`)
	live := e.open("app_id=demo", bearer(tok))
	live.Connected(t)
	seq := e.publish("sse.demo.alice", "x")
	live.ExpectIDs(t, seq)
	resumed := e.open("app_id=demo&last_event_id=0", bearer(tok))
	resumed.Connected(t)
	resumed.ExpectIDs(t, seq)
	e.epWaitOpen(2)

	e.relay.Drain()
	epRetryOnly(t, epReadRest(t, live), "")
	epRetryOnly(t, epReadRest(t, resumed), "")
	e.epWaitOpen(0)

	epWantError(t, epDo(t, http.MethodGet, e.url+"/readyz", nil, ""), http.StatusServiceUnavailable, "not ready: draining")
	if got := e.epMetric("sserelay_ready"); got != 0 {
		t.Fatalf("sserelay_ready %v while draining", got)
	}
	// A new stream is sent away with 200, a retry hint and a close.
	r := e.epGetEvents(t, "app_id=demo", bearer(tok))
	if r.Status != http.StatusOK || r.Header.Get("Content-Type") != "text/event-stream" || r.Header.Get("Cache-Control") != "no-cache" {
		t.Fatalf("new stream while draining: %d %v", r.Status, r.Header)
	}
	epRetryOnly(t, string(r.Body), "draining")
	if e.relay.OpenStreams() != 0 {
		t.Fatal("a stream opened while draining")
	}
	// A bad token still gets its 401: the client must not come back with it.
	epWantError(t, e.epGetEvents(t, "app_id=demo", nil), http.StatusUnauthorized,
		"missing token: send Authorization: Bearer, the access_token parameter or the sserelay_token cookie")
}

func TestEventsMaxStreams(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *Config) { c.MaxStreams = 2 }))
	tok := token(t, "alice")
	s1 := e.open("app_id=demo", bearer(tok))
	s1.Connected(t)
	s2 := e.open("app_id=demo", bearer(tok))
	s2.Connected(t)
	r := e.epGetEvents(t, "app_id=demo", bearer(tok))
	if r.Status != http.StatusOK || r.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream over the limit: %d %v %s", r.Status, r.Header, r.Body)
	}
	epRetryOnly(t, string(r.Body), "busy")
	if got := e.epMetric("sserelay_streams_shed_total"); got != 1 {
		t.Fatalf("sserelay_streams_shed_total %v, want 1", got)
	}
	if got := e.epMetric("sserelay_open_streams"); got != 2 {
		t.Fatalf("sserelay_open_streams %v, want 2", got)
	}
	// The limit counts open streams: closing one makes room.
	s1.Close()
	e.epWaitOpen(1)
	s3 := e.open("app_id=demo", bearer(tok))
	s3.Connected(t)
	seq := e.publish("sse.demo.alice", "x")
	s2.ExpectIDs(t, seq)
	s3.ExpectIDs(t, seq)
	// Polls are not streams: they are not shed.
	p := e.epGetEvents(t, "app_id=demo&poll=1", bearer(tok))
	if p.Status != http.StatusOK || p.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("poll at the stream limit: %d %s", p.Status, p.Body)
	}
}

func TestEventsClientDisconnectReleasesSession(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tok := token(t, "alice")
	s := e.open("app_id=demo&feed=alice&feed=team1", bearer(token(t, "alice", epFeeds("team1"))))
	s.Connected(t)
	other := e.open("app_id=demo", bearer(tok))
	other.Connected(t)
	e.epWaitOpen(2)
	s.Close()
	e.epWaitOpen(1)
	e.relay.hub.mu.Lock()
	_, team := e.relay.hub.feeds["demo.team1"]
	n := len(e.relay.hub.feeds["demo.alice"])
	e.relay.hub.mu.Unlock()
	if team || n != 1 {
		t.Fatalf("registry after disconnect: team1 present %v, %d sessions on demo.alice", team, n)
	}
	other.Close()
	e.epWaitOpen(0)
	epEventually(t, "open streams metric 0", func() bool { return e.epMetric("sserelay_open_streams") == 0 })
	e.relay.hub.mu.Lock()
	left := len(e.relay.hub.feeds)
	e.relay.hub.mu.Unlock()
	if left != 0 {
		t.Fatalf("registry keeps %d keys with no stream open", left)
	}
}

func TestEventsHealthReadyMetrics(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	epWantJSON(t, epDo(t, http.MethodGet, e.url+"/healthz", nil, ""), `{"status":"ok"}`)
	epWantJSON(t, epDo(t, http.MethodGet, e.url+"/readyz", nil, ""), `{"status":"ready"}`)

	m := epDo(t, http.MethodGet, e.url+"/metrics", nil, "")
	if m.Status != http.StatusOK || !strings.HasPrefix(m.Header.Get("Content-Type"), "text/plain; version=0.0.4") {
		t.Fatalf("GET /metrics: %d %q", m.Status, m.Header.Get("Content-Type"))
	}
	for _, line := range []string{
		"# TYPE sserelay_open_streams gauge", "sserelay_open_streams 0",
		"# TYPE sserelay_events_delivered_total counter", "sserelay_events_delivered_total 0",
	} {
		if !slices.Contains(strings.Split(string(m.Body), "\n"), line) {
			t.Fatalf("/metrics lacks line %q:\n%s", line, m.Body)
		}
	}

	tok := token(t, "alice")
	s1 := e.open("app_id=demo", bearer(tok))
	s1.Connected(t)
	s2 := e.open("app_id=demo&topic=a", bearer(tok))
	s2.Connected(t)
	a := e.publish("sse.demo.alice.a", "1")
	b := e.publish("sse.demo.alice.b", "2")
	s1.ExpectIDs(t, a, b)
	s2.ExpectIDs(t, a)
	if got := e.epMetric("sserelay_open_streams"); got != 2 {
		t.Fatalf("sserelay_open_streams %v, want 2", got)
	}
	if got := e.epMetric("sserelay_events_delivered_total"); got != 3 {
		t.Fatalf("sserelay_events_delivered_total %v, want 3", got)
	}
	// Replayed events count as delivered too.
	r := e.open("app_id=demo&last_event_id=0", bearer(tok))
	r.Connected(t)
	r.ExpectIDs(t, a, b)
	if got := e.epMetric("sserelay_events_delivered_total"); got != 5 {
		t.Fatalf("sserelay_events_delivered_total %v after a replay of 2, want 5", got)
	}
	if got := e.epMetric("sserelay_open_streams"); got != 3 {
		t.Fatalf("sserelay_open_streams %v, want 3", got)
	}
	s1.Close()
	s2.Close()
	r.Close()
	epEventually(t, "sserelay_open_streams 0", func() bool { return e.epMetric("sserelay_open_streams") == 0 })
}

func TestEventsStaticPages(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	js := epDo(t, http.MethodGet, e.url+"/v1/client.js", nil, "")
	if js.Status != http.StatusOK || js.Header.Get("Content-Type") != "text/javascript; charset=utf-8" {
		t.Fatalf("client.js: %d %q", js.Status, js.Header.Get("Content-Type"))
	}
	if !bytes.Equal(js.Body, clientJS) || !bytes.Contains(js.Body, []byte("export function connect")) {
		t.Fatalf("client.js body is not the client module (%d bytes)", len(js.Body))
	}
	demo := epDo(t, http.MethodGet, e.url+"/", nil, "")
	if demo.Status != http.StatusOK || demo.Header.Get("Content-Type") != "text/html; charset=utf-8" || !bytes.Equal(demo.Body, demoHTML) {
		t.Fatalf("demo page: %d %q (%d bytes)", demo.Status, demo.Header.Get("Content-Type"), len(demo.Body))
	}
	epWantError(t, epDo(t, http.MethodGet, e.url+"/nope", nil, ""), http.StatusNotFound, "not found")

	nd := newEnv(t, withConfig(func(c *Config) { c.NoDemo = true }))
	epWantError(t, epDo(t, http.MethodGet, nd.url+"/", nil, ""), http.StatusNotFound, "not found")
	if r := epDo(t, http.MethodGet, nd.url+"/v1/client.js", nil, ""); r.Status != http.StatusOK || !bytes.Equal(r.Body, clientJS) {
		t.Fatalf("client.js with NoDemo: %d", r.Status)
	}
}

func TestEventsCORS(t *testing.T) {
	t.Parallel()
	const origin = "https://app.example"
	e := newEnv(t, withConfig(func(c *Config) { c.AllowedOrigins = []string{origin, "https://other.example"} }))
	preflight := func(u, origin, method string) epResult {
		return epDo(t, http.MethodOptions, u, http.Header{
			"Origin":                         {origin},
			"Access-Control-Request-Method":  {method},
			"Access-Control-Request-Headers": {"authorization,last-event-id,x-connection-id"},
		}, "")
	}
	for _, path := range []string{"/v1/events?app_id=demo", "/v1/publish"} {
		method := map[string]string{"/v1/events?app_id=demo": "GET", "/v1/publish": "POST"}[path]
		r := preflight(e.url+path, origin, method)
		if r.Status != http.StatusNoContent {
			t.Fatalf("preflight %s: %d %s", path, r.Status, r.Body)
		}
		if got := r.Header.Get("Access-Control-Allow-Origin"); got != origin {
			t.Fatalf("preflight %s: Allow-Origin %q", path, got)
		}
		if got := r.Header.Get("Access-Control-Allow-Credentials"); got != "true" {
			t.Fatalf("preflight %s: Allow-Credentials %q", path, got)
		}
		allowed := strings.Split(strings.ToLower(strings.ReplaceAll(r.Header.Get("Access-Control-Allow-Headers"), " ", "")), ",")
		for _, h := range []string{"authorization", "last-event-id", "x-connection-id", "content-type"} {
			if !slices.Contains(allowed, h) {
				t.Fatalf("preflight %s: Allow-Headers %q lacks %s", path, r.Header.Get("Access-Control-Allow-Headers"), h)
			}
		}
		methods := strings.Split(strings.ReplaceAll(r.Header.Get("Access-Control-Allow-Methods"), " ", ""), ",")
		if !slices.Contains(methods, method) {
			t.Fatalf("preflight %s: Allow-Methods %q lacks %s", path, r.Header.Get("Access-Control-Allow-Methods"), method)
		}
		if !slices.Contains(r.Header.Values("Vary"), "Origin") {
			t.Fatalf("preflight %s: Vary %q lacks Origin", path, r.Header.Values("Vary"))
		}
	}
	noCORS := func(what string, r epResult) {
		t.Helper()
		for k := range r.Header {
			if strings.HasPrefix(k, "Access-Control-") {
				t.Fatalf("%s: CORS header %s: %q", what, k, r.Header.Get(k))
			}
		}
	}
	noCORS("preflight from a disallowed origin", preflight(e.url+"/v1/events?app_id=demo", "https://evil.example", "GET"))
	noCORS("preflight from a prefix of an allowed origin", preflight(e.url+"/v1/events?app_id=demo", "https://app.example.evil", "GET"))

	// Actual requests: the allowed origin may read the body and X-Connection-Id.
	tok := token(t, "alice")
	s := e.open("app_id=demo", http.Header{"Authorization": {"Bearer " + tok}, "Origin": {origin}})
	if s.Resp.Header.Get("Access-Control-Allow-Origin") != origin ||
		!slices.Contains(strings.Split(strings.ReplaceAll(s.Resp.Header.Get("Access-Control-Expose-Headers"), " ", ""), ","), "X-Connection-Id") {
		t.Fatalf("stream from an allowed origin: CORS headers %v", s.Resp.Header)
	}
	s.Connected(t)
	evil := e.open("app_id=demo", http.Header{"Authorization": {"Bearer " + tok}, "Origin": {"https://evil.example"}})
	evil.Connected(t)
	for k := range evil.Resp.Header {
		if strings.HasPrefix(k, "Access-Control-") {
			t.Fatalf("stream from a disallowed origin: CORS header %s", k)
		}
	}
	// Error answers carry CORS headers for an allowed origin, so the page can read them.
	r := e.epGetEvents(t, "app_id=demo", http.Header{"Origin": {origin}})
	if r.Status != http.StatusUnauthorized || r.Header.Get("Access-Control-Allow-Origin") != origin {
		t.Fatalf("401 to an allowed origin: %d %v", r.Status, r.Header)
	}

	// Without AllowedOrigins there are no CORS headers at all.
	plain := newEnv(t)
	noCORS("preflight without AllowedOrigins", preflight(plain.url+"/v1/events?app_id=demo", origin, "GET"))
}

// epPoll is the answer of poll=1.
type epPoll struct {
	Events []struct {
		ID    string `json:"id"`
		Event string `json:"event"`
		Data  string `json:"data"`
	} `json:"events"`
	LastEventID string `json:"last_event_id"`
	Reset       string `json:"reset"`
}

func (e *testEnv) epPoll(t testing.TB, query string, hdr http.Header) epPoll {
	t.Helper()
	r := e.epGetEvents(t, query, hdr)
	if r.Status != http.StatusOK || r.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("poll %s: %d %q %s", query, r.Status, r.Header.Get("Content-Type"), r.Body)
	}
	if r.Header.Get("X-Connection-Id") == "" {
		t.Fatalf("poll %s: no X-Connection-Id", query)
	}
	var p epPoll
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

func TestEventsPoll(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *Config) { c.PollPage = 2 }))
	hdr := bearer(token(t, "alice"))

	// No id: nothing, and the cursor to poll from next.
	p := e.epPoll(t, "app_id=demo&poll=1", hdr)
	if len(p.Events) != 0 || p.LastEventID != "0" {
		t.Fatalf("first poll %+v", p)
	}
	var mine []uint64
	mine = append(mine, e.publish("sse.demo.alice", "one", HeaderEvent, "n"))
	e.publish("sse.demo.bob", "bob's")
	mine = append(mine, e.publish("sse.demo.alice.t", "two\nlines"))
	mine = append(mine, e.publish("sse.demo.alice", `{"three":3}`, HeaderEvent, "n"))
	e.publish("sse.demo.bob", "bob's")
	last := e.publish("sse.demo.alice", "four")
	mine = append(mine, last)
	e.publish("sse.demo.bob", "bob's last")
	cursor := last + 1
	e.waitCursor(cursor)

	// Exact JSON of one page.
	r := e.epGetEvents(t, "app_id=demo&poll=1&last_event_id=0", hdr)
	epWantJSON(t, r, fmt.Sprintf(`{"events":[{"id":"%d","event":"n","data":"one"},{"id":"%d","data":"two\nlines"}],"last_event_id":"%d"}`, mine[0], mine[1], mine[1]))
	if cc := r.Header.Get("Cache-Control"); cc != "no-store" {
		t.Fatalf("poll Cache-Control %q", cc)
	}

	// Paging from there to the end.
	var got []string
	from := "0"
	for range 10 {
		p := e.epPoll(t, "app_id=demo&poll=1&last_event_id="+from, hdr)
		if len(p.Events) > 2 {
			t.Fatalf("page of %d events with PollPage 2", len(p.Events))
		}
		for _, ev := range p.Events {
			got = append(got, ev.ID+"/"+ev.Event+"/"+ev.Data)
		}
		if p.LastEventID == from {
			t.Fatalf("poll from %s did not move", from)
		}
		from = p.LastEventID
		if len(p.Events) < 2 {
			break
		}
	}
	want := []string{
		fmt.Sprintf("%d/n/one", mine[0]), fmt.Sprintf("%d//two\nlines", mine[1]),
		fmt.Sprintf("%d/n/{\"three\":3}", mine[2]), fmt.Sprintf("%d//four", mine[3]),
	}
	if !slices.Equal(got, want) {
		t.Fatalf("paged events\n got %q\nwant %q", got, want)
	}
	if from != strconv.FormatUint(cursor, 10) {
		t.Fatalf("last page's last_event_id %s, want the cursor %d", from, cursor)
	}
	// Polling at the cursor: nothing new, same cursor.
	p = e.epPoll(t, "app_id=demo&poll=1&last_event_id="+from, hdr)
	if len(p.Events) != 0 || p.LastEventID != from {
		t.Fatalf("poll at the cursor %+v", p)
	}
	// The Last-Event-ID header works as well, and topics narrow a poll.
	p = e.epPoll(t, "app_id=demo&poll=1&topic=t", http.Header{"Authorization": hdr["Authorization"], "Last-Event-Id": {"0"}})
	if len(p.Events) != 1 || p.Events[0].ID != strconv.FormatUint(mine[1], 10) || p.LastEventID != strconv.FormatUint(cursor, 10) {
		t.Fatalf("topic poll %+v", p)
	}
	// An id the stream never had.
	p = e.epPoll(t, "app_id=demo&poll=1&last_event_id=1000", hdr)
	if len(p.Events) != 0 || p.Reset != ResetUnknownID {
		t.Fatalf("poll from an unknown id %+v", p)
	}
	// Bad input gets the same errors as a stream.
	epWantError(t, e.epGetEvents(t, "app_id=demo&poll=1&last_event_id=x", hdr), http.StatusBadRequest, "last event id must be a decimal stream sequence")
	epWantError(t, e.epGetEvents(t, "app_id=demo&poll=1", nil), http.StatusUnauthorized,
		"missing token: send Authorization: Bearer, the access_token parameter or the sserelay_token cookie")
	if n := e.relay.OpenStreams(); n != 0 {
		t.Fatalf("polls left %d open streams", n)
	}
}
