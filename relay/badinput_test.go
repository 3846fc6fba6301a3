package relay

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Bad input against the real server: the relay on an embedded NATS server,
// served over a loopback socket. Each row sends one request (or raw bytes)
// and checks the status, the JSON body exactly, and what else the row says.
// Rows that need a configuration name one of badEnvs; rows of one env run in
// order, on one relay. Append rows freely; helpers carry the prefix "bi".

// badEnvs are the configurations rows can name.
var badEnvs = map[string]func(*Config){
	"": func(*Config) {},
	// cors: any origin, and one listed by name.
	"cors": func(c *Config) { c.AllowedOrigins = []string{"*", "https://app.example"} },
	// tight: small limits, each row with users of its own.
	"tight": func(c *Config) {
		c.BodyTimeout = 200 * time.Millisecond
		c.MaxStreamsPerUser = 2
		c.UserStreamRate, c.UserStreamBurst = 0.001, 3
		c.PublishRate, c.PublishBurst = 0.001, 2
		c.PollPageBytes = 1000
		c.MaxReplays = 2
	},
	// ip: the per-address limit, behind a trusted proxy on loopback.
	"ip": func(c *Config) {
		c.IPStreamRate, c.IPStreamBurst = 0.001, 3
		c.TrustedProxies = []string{"127.0.0.0/8", "10.0.0.0/8"}
	},
	// replays: two replay slots, one per user; clients that stop reading
	// hold theirs (no write timeout).
	"replays": func(c *Config) { c.MaxReplays, c.MaxReplaysPerUser, c.WriteTimeout = 2, 1, time.Hour },
	// conns: at most 3 connections.
	"conns": func(c *Config) { c.MaxConnections = 3 },
}

type badInput struct {
	name string
	env  string // a key of badEnvs
	// setup runs before the request (open streams, publish events).
	setup func(t *testing.T, e *testEnv)

	method, path string
	header       http.Header
	body         string
	// raw, when set, is written to a socket as is instead; the answer is read
	// from it, and closed reports whether the relay closed the socket after.
	raw string

	status int
	err    string // the exact {"error": ...}; "" for a non-error answer
	// stream: the answer is a stream sent away (200, text/event-stream, a
	// comment with this text, a retry hint, and the end of the body).
	stream string
	closed bool // the relay closes the connection after the answer (raw only)
	check  func(t *testing.T, e *testEnv, r biResult)
}

type biResult struct {
	httpResult
	closed bool
}

func badInputs(t *testing.T) []badInput {
	alice := bearer(token(t, "alice"))
	return []badInput{
		// Item 1: a body announced and never sent is not waited for beyond
		// BodyTimeout, whatever the endpoint.
		{name: "publish body never sent", env: "tight",
			raw:    "POST /v1/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token(t, "bodyless", claimPublish("demo")) + "\r\nContent-Type: application/json\r\nContent-Length: 10\r\n\r\n",
			status: http.StatusRequestTimeout, err: "request body not received within 200ms", closed: true},
		{name: "healthz body never sent", env: "tight",
			raw:    "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n",
			status: http.StatusOK, closed: true,
			check: func(t *testing.T, _ *testEnv, r biResult) { biWantBody(t, r, `{"status":"ok"}`) }},
		{name: "stream with a body", env: "tight",
			raw:    "GET /v1/events?app_id=demo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token(t, "withbody") + "\r\nContent-Length: 10\r\n\r\n",
			status: http.StatusBadRequest, err: "a stream request has no body", closed: true},
		{name: "connections over the limit are closed", env: "conns",
			check: func(t *testing.T, e *testEnv, _ biResult) { biConnLimit(t, e, 3) }},

		// Item 2: a stream request has no body; bytes after it end the
		// stream, at the cost of one read.
		{name: "bytes sent after a stream request",
			check: func(t *testing.T, e *testEnv, _ biResult) { biSendAfterStream(t, e, "after", 1) }},
		{name: "bytes pipelined with a stream request",
			check: func(t *testing.T, e *testEnv, _ biResult) { biSendAfterStream(t, e, "with", 2) }},

		// Item 3: a poll page is bounded in bytes, with at least one event.
		{name: "poll page bytes", env: "tight",
			setup: func(t *testing.T, e *testEnv) {
				var last uint64
				for i := 0; i < 5; i++ {
					last = e.publish("sse.demo.pollbytes", strings.Repeat("p", 400))
				}
				e.waitCursor(last) // a poll pages up to the relay's cursor
			},
			method: "GET", path: "/v1/events?app_id=demo&poll=1&last_event_id=0", header: bearer(token(t, "pollbytes")),
			status: http.StatusOK,
			check: func(t *testing.T, e *testEnv, r biResult) {
				p := biPoll(t, r)
				if len(p.Events) != 2 || p.LastEventID != p.Events[1].ID {
					t.Fatalf("page of 1000 bytes over 400-byte events: %d events, last_event_id %s (want 2 events)", len(p.Events), p.LastEventID)
				}
			}},
		{name: "poll page holds one event larger than the bound", env: "tight",
			setup: func(t *testing.T, e *testEnv) {
				e.waitCursor(e.publish("sse.demo.pollbig", strings.Repeat("b", 5000)))
			},
			method: "GET", path: "/v1/events?app_id=demo&poll=1&last_event_id=0", header: bearer(token(t, "pollbig")),
			status: http.StatusOK,
			check: func(t *testing.T, e *testEnv, r biResult) {
				if p := biPoll(t, r); len(p.Events) != 1 || len(p.Events[0].Data) != 5000 {
					t.Fatalf("page %+v, want the one 5000-byte event", p)
				}
			}},
		{name: "poll without a free replay slot", env: "tight",
			setup: func(t *testing.T, e *testEnv) {
				e.waitCursor(e.publish("sse.demo.pollbusy", "x"))
				for len(e.relay.replaySlots) < cap(e.relay.replaySlots) {
					e.relay.replaySlots <- struct{}{} // every slot taken, as by resumes that do not read
				}
				t.Cleanup(func() {
					for len(e.relay.replaySlots) > 0 {
						<-e.relay.replaySlots
					}
				})
			},
			method: "GET", path: "/v1/events?app_id=demo&poll=1&last_event_id=0", header: bearer(token(t, "pollbusy")),
			status: http.StatusServiceUnavailable, err: "busy: no replay slot free, retry later",
			check: func(t *testing.T, e *testEnv, r biResult) {
				biRetryAfter(t, r)
				biMetric(t, e, `sserelay_limited_total{limit="poll-replay-busy"}`, 1)
			}},

		// Item 5: per-user and per-address limits.
		{name: "streams per user", env: "tight",
			setup: func(t *testing.T, e *testEnv) {
				tok := bearer(token(t, "spu"))
				e.open("app_id=demo", tok).Connected(t)
				e.open("app_id=demo", tok).Connected(t)
			},
			method: "GET", path: "/v1/events?app_id=demo", header: bearer(token(t, "spu")),
			status: http.StatusOK, stream: "limited: streams-per-user",
			check: func(t *testing.T, e *testEnv, _ biResult) {
				biMetric(t, e, `sserelay_limited_total{limit="streams-per-user"}`, 1)
				e.open("app_id=demo", bearer(token(t, "spu-other"))).Connected(t) // another user is not limited
			}},
		{name: "new streams per second of a user, poll", env: "tight",
			setup: func(t *testing.T, e *testEnv) {
				for i := 0; i < 3; i++ { // the burst
					if r := e.getEvents(t, "app_id=demo&poll=1", bearer(token(t, "rate"))); r.Status != http.StatusOK {
						t.Fatalf("poll %d within the burst: %d %s", i, r.Status, r.Body)
					}
				}
			},
			method: "GET", path: "/v1/events?app_id=demo&poll=1", header: bearer(token(t, "rate")),
			status: http.StatusTooManyRequests, err: "too many requests (user-stream-rate): retry later",
			check: func(t *testing.T, e *testEnv, r biResult) { biRetryAfter(t, r) }},
		{name: "new streams per second of a user, EventSource", env: "tight",
			method: "GET", path: "/v1/events?app_id=demo", header: bearer(token(t, "rate")),
			status: http.StatusOK, stream: "limited: user-stream-rate",
			check: func(t *testing.T, e *testEnv, _ biResult) {
				biMetric(t, e, `sserelay_limited_total{limit="user-stream-rate"}`, 2)
			}},
		{name: "new streams per second of an address behind a trusted proxy", env: "ip",
			setup: func(t *testing.T, e *testEnv) {
				for i := 0; i < 3; i++ { // the burst, bad tokens included: the address is checked first
					r := e.getEvents(t, "app_id=demo", http.Header{"X-Forwarded-For": {"203.0.113.7"}})
					if r.Status != http.StatusUnauthorized {
						t.Fatalf("request %d within the burst: %d %s", i, r.Status, r.Body)
					}
				}
			},
			// The left part of X-Forwarded-For is the client's to write: the
			// address is the right-most one that is not a trusted proxy.
			method: "GET", path: "/v1/events?app_id=demo&poll=1", header: http.Header{"X-Forwarded-For": {"6.6.6.6, 203.0.113.7, 10.1.2.3"}},
			status: http.StatusTooManyRequests, err: "too many requests (ip-stream-rate): retry later",
			check: func(t *testing.T, e *testEnv, r biResult) {
				biRetryAfter(t, r)
				// An EventSource from that address is sent away with a retry hint.
				biSentAway(t, e.getEvents(t, "app_id=demo", http.Header{"X-Forwarded-For": {"203.0.113.7"}}), "limited: ip-stream-rate")
				// Another address is not limited.
				if r := e.getEvents(t, "app_id=demo&poll=1", http.Header{"X-Forwarded-For": {"198.51.100.9"}}); r.Status != http.StatusUnauthorized {
					t.Fatalf("another address: %d %s, want 401", r.Status, r.Body)
				}
				biMetric(t, e, `sserelay_limited_total{limit="ip-stream-rate"}`, 2)
			}},
		{name: "replay slots per user", env: "replays",
			check: func(t *testing.T, e *testEnv, _ biResult) { biReplaysPerUser(t, e) }},
		{name: "publishes per second of a token", env: "tight",
			setup: func(t *testing.T, e *testEnv) {
				for i := 0; i < 2; i++ {
					r := do(t, "POST", e.url+"/v1/publish", bearer(token(t, "pubrate", claimPublish("demo"))), `{"app_id":"demo","feed":"pubrate","data":"x"}`)
					if r.Status != http.StatusOK {
						t.Fatalf("publish %d within the burst: %d %s", i, r.Status, r.Body)
					}
				}
			},
			method: "POST", path: "/v1/publish", header: bearer(token(t, "pubrate", claimPublish("demo"))), body: `{"app_id":"demo","feed":"pubrate","data":"x"}`,
			status: http.StatusTooManyRequests, err: "too many publishes: retry later",
			check: func(t *testing.T, e *testEnv, r biResult) {
				biRetryAfter(t, r)
				biMetric(t, e, `sserelay_limited_total{limit="publish-rate"}`, 1)
				biMetric(t, e, `sserelay_publish_requests_total{code="429"}`, 1)
			}},

		// Item 7: "*" never sends credentials and never reflects null.
		{name: "cors any origin: no credentials", env: "cors",
			method: "GET", path: "/healthz", header: http.Header{"Origin": {"https://evil.example"}},
			status: http.StatusOK,
			check:  func(t *testing.T, _ *testEnv, r biResult) { biCORS(t, r, "*", "") }},
		{name: "cors null origin under *", env: "cors",
			check: func(t *testing.T, e *testEnv, _ biResult) {
				s := e.open("app_id=demo", http.Header{"Origin": {"null"}, "Authorization": alice["Authorization"]})
				biCORS(t, biResult{httpResult: httpResult{Header: s.Resp.Header}}, "*", "")
			}},
		{name: "cors preflight from any origin: no credentials", env: "cors",
			method: "OPTIONS", path: "/v1/events?app_id=demo", header: http.Header{"Origin": {"https://evil.example"}, "Access-Control-Request-Method": {"GET"}},
			status: http.StatusNoContent,
			check:  func(t *testing.T, _ *testEnv, r biResult) { biCORS(t, r, "*", "") }},
		{name: "cors listed origin: credentials", env: "cors",
			method: "GET", path: "/healthz", header: http.Header{"Origin": {"https://app.example"}},
			status: http.StatusOK,
			check:  func(t *testing.T, _ *testEnv, r biResult) { biCORS(t, r, "https://app.example", "true") }},

		// Item 8: HEAD answers the headers of a GET, opens nothing.
		{name: "HEAD of a stream", method: "HEAD", path: "/v1/events?app_id=demo", header: alice,
			status: http.StatusOK,
			check: func(t *testing.T, e *testEnv, r biResult) {
				if ct := r.Header.Get("Content-Type"); ct != "text/event-stream" || len(r.Body) != 0 {
					t.Fatalf("HEAD: Content-Type %q, body %q", ct, r.Body)
				}
				if n := e.relay.OpenStreams(); n != 0 {
					t.Fatalf("HEAD opened %d streams", n)
				}
			}},
		{name: "HEAD without a token", method: "HEAD", path: "/v1/events?app_id=demo",
			status: http.StatusUnauthorized,
			check: func(t *testing.T, _ *testEnv, r biResult) {
				if len(r.Body) != 0 {
					t.Fatalf("HEAD answered a body %q", r.Body)
				}
			}},

		// Item 6: a publish grant covers the feeds the token may read,
		// unless it says any feed of the app (APP:*).
		{name: "publish into another user's feed", method: "POST", path: "/v1/publish",
			header: biJSON(token(t, "alice", claimPublish("demo"))), body: `{"app_id":"demo","feed":"bob","data":"x"}`,
			status: http.StatusForbidden, err: `token does not grant publishing to feed "bob" of app "demo"`},
		{name: "publish into a broadcast feed not granted", method: "POST", path: "/v1/publish",
			header: biJSON(token(t, "alice", claimPublish("*"))), body: `{"app_id":"other","feed":"_all","data":"x"}`,
			status: http.StatusForbidden, err: `token does not grant publishing to feed "_all" of app "other"`},
		{name: "publish with any-feed of another app", method: "POST", path: "/v1/publish",
			header: biJSON(token(t, "svc", claimPublish("demo:*"))), body: `{"app_id":"other","feed":"bob","data":"x"}`,
			status: http.StatusForbidden, err: `token does not grant publishing to app "other"`},
		{name: "publish with any-feed grant", method: "POST", path: "/v1/publish",
			header: biJSON(token(t, "svc", claimPublish("demo:*"))), body: `{"app_id":"demo","feed":"bob","data":"x"}`,
			status: http.StatusOK},

		// Item 4: another publisher's id does not swallow an event.
		{name: "publish id of another publisher is not a duplicate",
			check: func(t *testing.T, e *testEnv, _ biResult) {
				body := `{"app_id":"demo","feed":"_all","data":"x","id":"order-42"}`
				a := wantSeq(t, e.post(t, token(t, "svc-a", claimPublish("demo:*")), body))
				b := wantSeq(t, e.post(t, token(t, "svc-b", claimPublish("demo:*")), body))
				again := wantSeq(t, e.post(t, token(t, "svc-a", claimPublish("demo:*")), body))
				if a == b || again != a {
					t.Fatalf("seqs %d (a), %d (b), %d (a's retry): want b new and the retry a's", a, b, again)
				}
			}},

		// Stream parameters the fuzz targets cover, one of each here.
		{name: "Last-Event-ID above uint64", method: "GET", path: "/v1/events?app_id=demo",
			header: http.Header{"Authorization": alice["Authorization"], "Last-Event-Id": {"18446744073709551616"}},
			status: http.StatusBadRequest, err: "last event id must be a decimal stream sequence"},
		{name: "topic with an empty token", method: "GET", path: "/v1/events?app_id=demo&topic=a..b", header: alice,
			status: http.StatusBadRequest, err: `invalid subject token: topic "a..b" must be tokens of 1 to 128 characters joined by '.', without '*', '>', whitespace or control characters`},
	}
}

// biJSON is the header of a JSON publish with tok.
func biJSON(tok string) http.Header {
	return http.Header{"Authorization": {"Bearer " + tok}, "Content-Type": {"application/json"}}
}

func TestBadInput(t *testing.T) {
	rows := badInputs(t)
	byEnv := map[string][]badInput{}
	var order []string
	for _, row := range rows {
		if _, ok := badEnvs[row.env]; !ok {
			t.Fatalf("row %q: no env %q", row.name, row.env)
		}
		if byEnv[row.env] == nil {
			order = append(order, row.env)
		}
		byEnv[row.env] = append(byEnv[row.env], row)
	}
	for _, name := range order {
		t.Run("env="+name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, withConfig(badEnvs[name]))
			for _, row := range byEnv[name] {
				t.Run(row.name, func(t *testing.T) { biRun(t, e, row) })
			}
		})
	}
}

func biRun(t *testing.T, e *testEnv, row badInput) {
	if row.setup != nil {
		row.setup(t, e)
	}
	var r biResult
	switch {
	case row.raw != "":
		r = biRaw(t, e, row.raw)
	case row.method != "":
		r.httpResult = do(t, row.method, e.url+row.path, row.header, row.body)
	}
	if row.method != "" || row.raw != "" {
		if r.Status != row.status {
			t.Fatalf("status %d, want %d (body %s)", r.Status, row.status, r.Body)
		}
		switch {
		case row.err != "":
			wantError(t, r.httpResult, row.status, row.err)
		case row.stream != "":
			biSentAway(t, r.httpResult, row.stream)
		}
		if row.raw != "" && r.closed != row.closed {
			t.Fatalf("connection closed after the answer: %v, want %v", r.closed, row.closed)
		}
	}
	if row.check != nil {
		row.check(t, e, r)
	}
}

// biRaw writes raw to a new connection and reads one answer, then whether
// the relay closes the connection (within a second: it would have at once).
func biRaw(t *testing.T, e *testEnv, raw string) biResult {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(e.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second)) // a hang guard only
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("answer body: %v", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(time.Second))
	_, err = br.ReadByte()
	closed := errors.Is(err, io.EOF) || (err != nil && !errors.Is(err, errTimeout(err)))
	return biResult{httpResult: httpResult{Status: resp.StatusCode, Header: resp.Header, Body: body}, closed: closed}
}

// errTimeout returns err when it is a timeout, so that errors.Is matches it.
func errTimeout(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return err
	}
	return errors.New("not a timeout")
}

// biSentAway checks a stream sent away: 200, text/event-stream, exactly
// the comment, a retry hint with nothing after it, and the body's end.
func biSentAway(t *testing.T, r httpResult, comment string) {
	t.Helper()
	if r.Status != http.StatusOK || r.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("sent away: %d %q, want 200 text/event-stream", r.Status, r.Header.Get("Content-Type"))
	}
	rest, ok := strings.CutPrefix(string(r.Body), ": "+comment+"\nretry: ")
	ms, err := strconv.Atoi(strings.TrimSuffix(rest, "\n"))
	if !ok || !strings.HasSuffix(rest, "\n") || err != nil || ms <= 0 {
		t.Fatalf("sent away with %q, want the comment %q and a retry hint", r.Body, comment)
	}
}

func biWantBody(t *testing.T, r biResult, want string) {
	t.Helper()
	if got := string(bytes.TrimSuffix(r.Body, []byte("\n"))); got != want {
		t.Fatalf("body %s, want %s", got, want)
	}
}

func biRetryAfter(t *testing.T, r biResult) {
	t.Helper()
	if n, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || n < 1 {
		t.Fatalf("Retry-After %q, want whole seconds ≥ 1", r.Header.Get("Retry-After"))
	}
}

func biMetric(t *testing.T, e *testEnv, sel string, want float64) {
	t.Helper()
	if got := e.metric(sel); got != want {
		t.Fatalf("%s = %v, want %v", sel, got, want)
	}
}

func biCORS(t *testing.T, r biResult, origin, credentials string) {
	t.Helper()
	if got := r.Header.Get("Access-Control-Allow-Origin"); got != origin {
		t.Fatalf("Access-Control-Allow-Origin %q, want %q", got, origin)
	}
	if got := r.Header.Get("Access-Control-Allow-Credentials"); got != credentials {
		t.Fatalf("Access-Control-Allow-Credentials %q, want %q", got, credentials)
	}
}

func biPoll(t *testing.T, r biResult) pollAnswer {
	t.Helper()
	var p pollAnswer
	if err := json.Unmarshal(r.Body, &p); err != nil {
		t.Fatalf("poll answer %s: %v", r.Body, err)
	}
	return p
}

// biConnLimit holds n idle connections, checks that one more is closed at
// once and counted, and that a slot frees when one of them closes.
func biConnLimit(t *testing.T, e *testEnv, n int) {
	t.Helper()
	http.DefaultClient.CloseIdleConnections() // pooled connections would count
	addr := strings.TrimPrefix(e.url, "http://")
	var held []net.Conn
	var mu sync.Mutex
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range held {
			c.Close()
		}
	}()
	for len(held) < n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		held = append(held, c)
		mu.Unlock()
	}
	eventually(t, 10*time.Second, "the held connections accepted", func() bool {
		return e.relay.limitListenerOpen() == int64(n)
	})
	extra, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	_ = extra.SetReadDeadline(time.Now().Add(10 * time.Second)) // a hang guard
	if _, err := extra.Read(make([]byte, 1)); !errors.Is(err, io.EOF) && !isReset(err) {
		t.Fatalf("connection over the limit: read %v, want it closed", err)
	}
	held[0].Close()
	eventually(t, 10*time.Second, "a slot freed", func() bool { return e.relay.limitListenerOpen() == int64(n-1) })
	http.DefaultClient.CloseIdleConnections()
	biMetric(t, e, "sserelay_connections_refused_total", 1)
}

func isReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

func (r *Relay) limitListenerOpen() int64 { return r.openConns.Load() }

// biSendAfterStream opens a stream on a raw connection and sends a MiB
// after the request (when "after" its first event arrived, or "with" it in
// the same write): the relay must close the connection and count the
// close as a protocol violation (the want-th of the env).
func biSendAfterStream(t *testing.T, e *testEnv, when string, want float64) {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(e.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second)) // a hang guard only
	req := "GET /v1/events?app_id=demo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token(t, "sender-"+when) + "\r\n\r\n"
	junk := bytes.Repeat([]byte("x"), 1<<20)
	br := bufio.NewReader(c)
	if when == "with" {
		_, _ = c.Write(append([]byte(req), junk[:100]...))
	} else {
		_, _ = io.WriteString(c, req)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("stream: %v %v", resp, err)
		}
		if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "retry:") {
			t.Fatalf("stream's first line %q, %v", line, err)
		}
		go func() { _, _ = c.Write(junk) }() // ends with the connection
	}
	if _, err := io.Copy(io.Discard, br); err != nil && !isReset(err) {
		t.Fatalf("the relay did not close the stream: %v", err)
	}
	eventually(t, 10*time.Second, "the close counted", func() bool {
		return e.metric(`sserelay_streams_closed_total{reason="protocol-violation"}`) == want
	})
	e.waitOpen(0)
}

// biReplaysPerUser: three resumes of one user that do not read hold one
// replay slot between them, so another user's resume goes through.
func biReplaysPerUser(t *testing.T, e *testEnv) {
	t.Helper()
	big := strings.Repeat("r", 100<<10)
	var last uint64
	for i := 0; i < 200; i++ { // 20 MiB: more than the socket buffers hold
		last = e.publish("sse.demo.hog", big)
	}
	e.waitCursor(last)
	tok := token(t, "hog")
	for i := 0; i < 3; i++ {
		c, err := net.Dial("tcp", strings.TrimPrefix(e.url, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_, _ = io.WriteString(c, "GET /v1/events?app_id=demo&last_event_id=0 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+tok+"\r\n\r\n")
	}
	e.waitOpen(3)
	eventually(t, 10*time.Second, "the hog's catch-up holding a slot", func() bool { return len(e.relay.replaySlots) == 1 })
	seq := e.publish("sse.demo.other", "mine")
	e.waitCursor(seq)
	s := e.open("app_id=demo&last_event_id="+strconv.FormatUint(seq-1, 10), bearer(token(t, "other")))
	s.MustNext(t) // connected
	s.ExpectIDs(t, seq)
	// The other user's slot is given back just after its last event is
	// written: wait for that; the hog's three catch-ups keep their one.
	eventually(t, 10*time.Second, "the other user's slot back and the hog's one kept", func() bool { return len(e.relay.replaySlots) == 1 })
}
