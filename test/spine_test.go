package e2e_test

import (
	"context"
	"net/url"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestSpine drives one relay through the main path: exact bytes of
// live events from every publishing path, topics, isolation between users,
// keepalives, curl, SIGTERM drain, and a restart that keeps the sequence and
// replays history.
func TestSpine(t *testing.T) {
	t.Parallel()
	const secret = "spine-secret"
	const drain = 3 * time.Second
	dataDir := t.TempDir()
	args := []string{"--keepalive", "200ms", "--drain-timeout", drain.String()}
	r := startRelay(t, relayOpts{Secret: secret, DataDir: dataDir, Args: args})
	base := r.freshStream(t)

	alice := token(t, secret, "alice", "--app", "app", "--publish", "app")
	bob := token(t, secret, "bob", "--app", "app")
	bearer := func(tok string) map[string]string { return map[string]string{"Authorization": "Bearer " + tok} }
	events := func(q url.Values) string { return r.URL + "/v1/events?" + q.Encode() }

	// ---- streams: one per token transport (header, query, cookie)
	s1 := openStream(t, events(url.Values{"app_id": {"app"}, "connection_id": {"alice-conn-1"}}), bearer(alice))
	s2 := openStream(t, events(url.Values{"app_id": {"app"}}), bearer(alice))
	s3 := openStream(t, events(url.Values{"app_id": {"app"}, "topic": {"orders"}, "access_token": {alice}}), nil)
	sb := openStream(t, events(url.Values{"app_id": {"app"}}), map[string]string{"Cookie": "sserelay_token=" + bob})

	for name, s := range map[string]*sseStream{"s1": s1, "s2": s2, "s3": s3, "sb": sb} {
		h := s.resp.Header
		for k, want := range map[string]string{"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"} {
			if got := h.Get(k); got != want {
				t.Errorf("%s: header %s = %q, want %q", name, k, got, want)
			}
		}
		c := s.connected(t)
		if h.Get("X-Connection-Id") == "" || c["connection_id"] != h.Get("X-Connection-Id") {
			t.Errorf("%s: X-Connection-Id %q, sserelay.connected connection_id %q: want the same id", name, h.Get("X-Connection-Id"), c["connection_id"])
		}
	}
	if got := s1.resp.Header.Get("X-Connection-Id"); got != "alice-conn-1" {
		t.Errorf("proposed connection_id alice-conn-1, got %q", got)
	}
	conn2 := s2.resp.Header.Get("X-Connection-Id")
	if !regexp.MustCompile(`^[A-Za-z0-9_-]{16,64}$`).MatchString(conn2) {
		t.Errorf("generated connection id %q: want at least 16 URL-safe characters", conn2)
	}
	conn3 := s3.resp.Header.Get("X-Connection-Id")
	connB := sb.resp.Header.Get("X-Connection-Id")
	// The first bytes: the retry hint, then sserelay.connected with the id
	// of the stream's last sequence (the client resumes from there).
	pre1 := connectedFrame(2000, true, base, "alice-conn-1", "alice", "app")
	if got := normalize(s1.raw()); got != pre1 {
		t.Errorf("first bytes of the stream:\n got %q\nwant %q", got, pre1)
	}

	// curl: a client we did not write.
	curlBin := tool(t, "", "curl")
	curl := startProc(t, "curl", exec.Command(curlBin, "-sN", "--noproxy", "*", "-H", "Authorization: Bearer "+alice,
		events(url.Values{"app_id": {"app"}, "topic": {"orders"}, "connection_id": {"curl-conn-01"}})))
	eventually(t, waitShort, "curl to get sserelay.connected", func() bool {
		return strings.Contains(curl.stdout.String(), "event: sserelay.connected\n")
	})

	// ---- publish through every path
	var aliceAll []ev // every event on alice's feed, in order
	var s1Want, s3Want, bobWant []ev
	add := func(e ev, toS1, toS3 bool) {
		aliceAll = append(aliceAll, e)
		if toS1 {
			s1Want = append(s1Want, e)
		}
		if toS3 {
			s3Want = append(s3Want, e)
		}
	}

	// sserelay publish, multi-line data on stdin with every line end.
	p1 := publishCLI(t, r.NATS, "line1\nline2\r\nline3\rline4\n\nline6", "--app", "app", "--feed", "alice", "--event", "greet")
	add(ev{p1, "greet", "line1\nline2\nline3\nline4\n\nline6"}, true, false)
	p2 := publishCLI(t, r.NATS, "", "--app", "app", "--feed", "alice", "--topic", "orders", "order 1")
	add(ev{p2, "", "order 1"}, true, true)
	p3 := publishCLI(t, r.NATS, "", "--app", "app", "--feed", "alice", "--topic", "orders.eu", "--event", "order", "order eu")
	add(ev{p3, "order", "order eu"}, true, true)
	p4 := publishCLI(t, r.NATS, "", "--app", "app", "--feed", "alice", "--topic", "ordersx", "not an order")
	add(ev{p4, "", "not an order"}, true, false)

	// nats.go, with the contract's headers.
	nc, err := nats.Connect(r.NATS, nats.MaxReconnects(0))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	jsPub := func(subject, data string, hdr map[string]string) uint64 {
		t.Helper()
		m := nats.NewMsg(subject)
		m.Data = []byte(data)
		for k, v := range hdr {
			m.Header.Set(k, v)
		}
		ctx, cancel := context.WithTimeout(context.Background(), waitShort)
		defer cancel()
		ack, err := js.PublishMsg(ctx, m)
		if err != nil {
			t.Fatalf("publish %s: %v", subject, err)
		}
		return ack.Sequence
	}
	p5 := jsPub("sse.app.alice", `{"k":"v"}`, map[string]string{"X-Connection-Id": "alice-conn-1", "X-Connection-User": "alice", "Sse-Event": "viaNats"})
	add(ev{p5, "viaNats", `{"k":"v"}`}, false, false) // s1 is the sender
	p6 := jsPub("sse.app.bob", "for bob", nil)
	bobWant = append(bobWant, ev{p6, "", "for bob"})

	// POST /v1/publish: non-string JSON data is sent as its compact text.
	p7 := publishHTTP(t, r.URL, alice, map[string]any{"app_id": "app", "feed": "alice", "topic": "orders", "data": map[string]any{"n": 7}}, nil)
	add(ev{p7, "", `{"n":7}`}, true, true)

	// A duplicate id within the window returns the original sequence and
	// stores nothing new.
	dup := map[string]any{"app_id": "app", "feed": "alice", "topic": "orders", "id": "dedupe-1", "data": "once"}
	pD := publishHTTP(t, r.URL, alice, dup, nil)
	if again := publishHTTP(t, r.URL, alice, dup, nil); again != pD {
		t.Errorf("duplicate id: seq %d, want the original %d", again, pD)
	}
	add(ev{pD, "", "once"}, true, true)

	// Last events: every stream has everything before them once it has them.
	pA := publishCLI(t, r.NATS, "", "--app", "app", "--feed", "alice", "--topic", "orders", "--event", "end", "end alice")
	add(ev{pA, "end", "end alice"}, true, true)
	pB := jsPub("sse.app.bob", "end bob", map[string]string{"Sse-Event": "end"})
	bobWant = append(bobWant, ev{pB, "end", "end bob"})
	if got, want := fmtSeqs([]uint64{p1, p2, p3, p4, p5, p6, p7, pD, pA, pB}), fmtSeqs([]uint64{base + 1, base + 2, base + 3, base + 4, base + 5, base + 6, base + 7, base + 8, base + 9, base + 10}); got != want {
		t.Errorf("sequences %s, want %s", got, want)
	}

	s1.waitID(t, pA)
	s2.waitID(t, pA)
	s3.waitID(t, pA)
	sb.waitID(t, pB)
	eventually(t, waitShort, "curl to get the last event", func() bool {
		return strings.Contains(curl.stdout.String(), ev{pA, "end", "end alice"}.frame())
	})

	want1 := pre1 + frames(s1Want...)
	want2 := connectedFrame(2000, true, base, conn2, "alice", "app") + frames(aliceAll...)
	want3 := connectedFrame(2000, true, base, conn3, "alice", "app") + frames(s3Want...)
	wantB := connectedFrame(2000, true, base, connB, "bob", "app") + frames(bobWant...)
	wantCurl := connectedFrame(2000, true, base, "curl-conn-01", "alice", "app") + frames(s3Want...)
	for _, c := range []struct{ name, got, want string }{
		{"s1 (alice, sender of p5)", normalize(s1.raw()), want1},
		{"s2 (alice)", normalize(s2.raw()), want2},
		{"s3 (alice, topic=orders)", normalize(s3.raw()), want3},
		{"sb (bob)", normalize(sb.raw()), wantB},
		{"curl (alice, topic=orders)", normalize(curl.stdout.String()), wantCurl},
	} {
		if c.got != c.want {
			t.Errorf("%s: bytes differ\n got %q\nwant %q", c.name, c.got, c.want)
		}
	}

	// Keepalive: an idle stream gets comment lines (every 200 ms here).
	n := len(s1.raw())
	after := s1.waitRaw(t, "a keepalive comment on the idle stream", func(raw string) bool {
		return commentLine.MatchString(raw[n:])
	})[n:]
	if !regexp.MustCompile(`^(:[^\n]*\n)+$`).MatchString(after) {
		t.Errorf("idle stream got %q, want only comment lines", after)
	}

	// Metrics.
	if n := metric(t, r.URL, "sserelay_open_streams"); n != 5 {
		t.Errorf("/metrics: sserelay_open_streams %v, want 5 (s1, s2, s3, sb, curl)", n)
	}
	if n := metric(t, r.URL, "sserelay_events_delivered_total"); n == 0 {
		t.Errorf("/metrics: sserelay_events_delivered_total 0 after deliveries")
	}
	if t.Failed() {
		t.FailNow()
	}

	// ---- SIGTERM: open streams get a final retry hint and a clean end; the
	// process exits 0 within the drain timeout plus a few seconds.
	termAt := time.Now()
	r.signal(t, syscall.SIGTERM)
	if code := r.wait(t, drain+10*time.Second); code != 0 {
		t.Errorf("exit code after SIGTERM %d, want 0", code)
	}
	t.Logf("relay exited %s after SIGTERM (drain timeout %s)", time.Since(termAt).Round(time.Millisecond), drain)
	retryLine := regexp.MustCompile(`retry: (\d+)\n$`) // a field, no blank line: the unfinished block is dropped, the hint kept
	checkDrained := func(name, raw, before string, endErr error) {
		t.Helper()
		raw = normalize(raw)
		m := retryLine.FindStringSubmatch(raw)
		if m == nil || !strings.HasPrefix(raw, before) || raw[len(before):] != m[0] {
			t.Errorf("%s after SIGTERM: want the events then one final retry line, got the tail %q", name, raw[min(len(before), len(raw)):])
			return
		}
		if ms, _ := strconv.Atoi(m[1]); ms < 2000 || ms > 4000 {
			t.Errorf("%s: drain retry hint %d ms, want the configured 2000 plus jitter up to 2000", name, ms)
		}
		if endErr != nil && !isCleanEnd(endErr) {
			t.Errorf("%s: stream ended with %v, want a clean end of the response", name, endErr)
		}
	}
	checkDrained("s1", s1.raw(), want1, s1.endErr(t))
	checkDrained("s2", s2.raw(), want2, s2.endErr(t))
	checkDrained("s3", s3.raw(), want3, s3.endErr(t))
	checkDrained("sb", sb.raw(), wantB, sb.endErr(t))
	if code := curl.wait(t, waitShort); code != 0 {
		t.Errorf("curl exit code %d, want 0 (18 means the response was cut, not ended)", code)
	}
	checkDrained("curl", curl.stdout.String(), wantCurl, nil)
	if !strings.Contains(r.stderr.String(), `"msg":"stopped"`) {
		t.Errorf("relay did not log a clean stop")
	}
	if t.Failed() {
		t.FailNow()
	}

	// ---- restart with the same data dir: the sequence continues and the
	// history is still there.
	r2 := startRelay(t, relayOpts{Secret: secret, DataDir: dataDir, Args: args})
	if got := r2.lastSeqAtStart(t); got != pB {
		t.Errorf("after restart: stream last_seq %d, want %d", got, pB)
	}
	ev2 := func(q url.Values) string { return r2.URL + "/v1/events?" + q.Encode() }
	// Resume as s1 (same connection id: still excluded from p5) after p1.
	rs1 := openStream(t, ev2(url.Values{"app_id": {"app"}, "connection_id": {"alice-conn-1"}}), map[string]string{"Authorization": "Bearer " + alice, "Last-Event-ID": strconv.FormatUint(p1, 10)})
	// A new connection from the very start (the id its first connected
	// event carried), with the query parameter.
	rs0 := openStream(t, ev2(url.Values{"app_id": {"app"}, "last_event_id": {strconv.FormatUint(base, 10)}}), bearer(alice))
	rs1.connected(t)
	rs0.connected(t)
	pN := publishCLI(t, r2.NATS, "", "--app", "app", "--feed", "alice", "after restart")
	if pN != pB+1 {
		t.Errorf("first publish after restart got seq %d, want %d", pN, pB+1)
	}
	last := ev{pN, "", "after restart"}
	rs1.waitID(t, pN)
	rs0.waitID(t, pN)
	// With a Last-Event-ID the connected event carries no id.
	wantR1 := connectedFrame(2000, false, 0, "alice-conn-1", "alice", "app") + frames(append(s1Want[1:], last)...)
	wantR0 := connectedFrame(2000, false, 0, rs0.resp.Header.Get("X-Connection-Id"), "alice", "app") + frames(append(aliceAll, last)...)
	if got := normalize(rs1.raw()); got != wantR1 {
		t.Errorf("resume after p1 with connection_id alice-conn-1:\n got %q\nwant %q", got, wantR1)
	}
	if got := normalize(rs0.raw()); got != wantR0 {
		t.Errorf("resume from the start:\n got %q\nwant %q", got, wantR0)
	}

	// An id this stream never handed out: reset unknown-id with id C (the
	// live point), then live events.
	ru := openStream(t, ev2(url.Values{"app_id": {"app"}}), map[string]string{"Authorization": "Bearer " + alice, "Last-Event-ID": strconv.FormatUint(pN+1000, 10)})
	var reset []sseEvent
	eventually(t, waitShort, "sserelay.reset on an unknown id", func() bool {
		reset = nil
		for _, e := range ru.events() {
			if e.Event == "sserelay.reset" {
				reset = append(reset, e)
			}
		}
		return len(reset) > 0
	})
	if len(reset) != 1 || reset[0].ID != strconv.FormatUint(pN, 10) || canonJSON(reset[0].Data) != `{"reason":"unknown-id"}` {
		t.Errorf("unknown id: got reset events %+v, want one with id %d and data {\"reason\":\"unknown-id\"}", reset, pN)
	}
}
