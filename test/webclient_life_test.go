package e2e_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// webSetup starts a relay, the harness in front of it, Chromium and one page.
func webSetup(t *testing.T, secret string, relayArgs ...string) (*relayProc, *webHarness, *page) {
	t.Helper()
	r := startRelay(t, relayOpts{Secret: secret, Args: relayArgs})
	r.freshStream(t)
	h := newWebHarness(t, r, secret)
	b := startBrowser(t)
	p := b.open(h.srv.URL + "/page")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("page record:\n  %s", p.dump())
		}
	})
	return r, h, p
}

// publisher publishes to alice's feed over HTTP with a token it mints.
func publisher(t *testing.T, relayURL func() string, secret func() string) func(event, data string) ev {
	return func(event, data string) ev {
		t.Helper()
		body := map[string]any{"app_id": "app", "feed": "alice", "data": data}
		if event != "" {
			body["event"] = event
		}
		return ev{publishHTTP(t, relayURL(), mintToken(t, secret(), "alice", time.Hour), body, nil), event, data}
	}
}

func hasState(rec pageRecord, state, reason string) bool {
	return slices.ContainsFunc(rec.States, func(s [3]string) bool { return s[0] == state && (reason == "" || s[1] == reason) })
}

// TestWebClientTokenExpiry: tokens that live 2-3 s; the relay ends the
// stream with sserelay.token-expired, the client asks getToken() for a new
// one and resumes from its last id: across two expiries nothing is lost or
// repeated.
func TestWebClientTokenExpiry(t *testing.T) {
	t.Parallel()
	const secret = "expiry-secret"
	// No leeway: the streams end at exp, so that two expiries fit the loop.
	r, h, p := webSetup(t, secret, "--jwt-leeway", "0s")
	h.mu.Lock()
	h.ttl = 3 * time.Second
	h.mu.Unlock()
	pub := publisher(t, func() string { return r.URL }, func() string { return secret })
	p.start(fast(map[string]any{"useGetToken": true, "events": []string{"note"}}))
	p.waitTrue("the page open", `window.relay.state === "open"`)

	var want []ev
	for i := 0; h.tokens.Load() < 3; i++ {
		if i == 200 {
			t.Fatalf("only %d tokens fetched after %d events", h.tokens.Load(), i)
		}
		want = append(want, pub("note", fmt.Sprint("event ", i)))
		time.Sleep(100 * time.Millisecond)
	}
	want = append(want, pub("", "after the refreshes"))
	end := pub("", "end")
	p.waitSeq("the last event", end.seq)
	got := p.got()
	sameEvents(t, "page", got[:len(got)-1], want)
	rec := p.record()
	if !hasState(rec, "connecting", "token-expired") {
		t.Errorf("no state change for the expiry: %v", rec.States)
	}
	if len(rec.Connected) < 3 || rec.Tokens < 3 {
		t.Errorf("%d connections, %d tokens: want at least 3 of each (two expiries)", len(rec.Connected), rec.Tokens)
	}
}

// TestWebClient401OnReconnect: the relay is killed and comes back with
// another secret; the fetch transport's reconnect gets 401, asks getToken()
// and resumes from its last id with the new token.
func TestWebClient401OnReconnect(t *testing.T) {
	t.Parallel()
	const secret1, secret2 = "old-secret", "new-secret"
	r, h, p := webSetup(t, secret1, "--retry", "200ms")
	secret := secret1
	pub := publisher(t, func() string { return r.URL }, func() string { return secret })
	p.start(fast(map[string]any{"transport": "fetch", "useGetToken": true, "pollAfter": 1000, "events": []string{"note"}}))
	p.waitTrue("the page open", `window.relay.state === "open"`)
	want := []ev{pub("", "one"), pub("note", "two")}
	p.waitSeq("the first events", want[1].seq)

	r.kill()
	r = startRelay(t, relayOpts{Secret: secret2, DataDir: r.opts.DataDir, Listen: r.Addr})
	secret = secret2
	h.setRelay(r, secret2)
	want = append(want, pub("", "three"))
	p.waitTrue("the page to reconnect", `window.rec.connected.length >= 2`)
	want = append(want, pub("note", "four"))
	end := pub("", "end")
	p.waitSeq("the last event", end.seq)
	got := p.got()
	sameEvents(t, "page", got[:len(got)-1], want)
	rec := p.record()
	if !hasState(rec, "connecting", "unauthorized") || rec.Tokens < 2 {
		t.Errorf("want a 401 refresh: states %v, %d tokens", rec.States, rec.Tokens)
	}
	if c := rec.Connected; len(c) < 2 || c[len(c)-1].ConnectionID != c[0].ConnectionID {
		t.Errorf("connections %+v: want two or more with one connection id", c)
	}
}

// TestWebClientPollingFallback: a proxy refuses event streams; after five
// failures the client polls (poll=1) from its position, and when the proxy
// lets streams through again a probe opens one and polling ends. Events
// arrive exactly once in both modes.
func TestWebClientPollingFallback(t *testing.T) {
	t.Parallel()
	const secret = "polling-secret"
	r, h, p := webSetup(t, secret)
	pub := publisher(t, func() string { return r.URL }, func() string { return secret })
	h.blockSSE.Store(true)
	tok := mintToken(t, secret, "alice", time.Hour)
	conn := p.start(fast(map[string]any{"token": tok, "events": []string{"note"}}))
	p.waitTrue("the page to poll", `window.relay.state === "polling"`)
	if n := h.blocked.Load(); n < 5 {
		t.Errorf("polling after %d refused streams, want 5", n)
	}
	// The page's own events stay out in both modes: polls carry its connection id too.
	own := func() {
		t.Helper()
		publishHTTP(t, r.URL, tok, map[string]any{"app_id": "app", "feed": "alice", "data": "own"}, map[string]string{"X-Connection-Id": conn})
	}
	own()
	want := []ev{pub("", "polled one"), pub("note", "polled\ntwo")}
	p.waitSeq("the polled events", want[1].seq)

	h.blockSSE.Store(false)
	p.waitTrue("a probe to open the stream", `window.relay.state === "open"`)
	own()
	want = append(want, pub("", "streamed three"), pub("note", "streamed four"))
	p.waitSeq("the streamed events", want[3].seq)
	sameEvents(t, "page", p.got(), want)
	for i, e := range p.record().Events {
		if wantState := []string{"polling", "polling", "open", "open"}[i]; e.State != wantState {
			t.Errorf("event %d delivered in state %q, want %q", i, e.State, wantState)
		}
	}
}

// TestWebClientHiddenAndOffline: hidden for longer than hiddenTimeout, the
// client closes its stream; visible again, it resumes from its last id. The
// same for offline and online.
func TestWebClientHiddenAndOffline(t *testing.T) {
	t.Parallel()
	const secret = "hidden-secret"
	r, _, p := webSetup(t, secret)
	pub := publisher(t, func() string { return r.URL }, func() string { return secret })
	tok := mintToken(t, secret, "alice", time.Hour)
	conn := p.start(fast(map[string]any{"transport": "xhr", "token": tok, "hiddenTimeout": 200}))
	p.waitTrue("the page open", `window.relay.state === "open"`)
	want := []ev{pub("", "visible")}
	p.waitSeq("the first event", want[0].seq)

	streamClosed := func(n int) {
		t.Helper()
		eventually(t, waitLong, fmt.Sprintf("stream %d of the page closed at the relay", n), func() bool {
			c := 0
			for _, m := range r.jsonLines("stream closed") {
				if m["conn"] == conn {
					c++
				}
			}
			return c >= n
		})
	}
	p.must("window.setHidden(true)", nil)
	p.waitTrue("the page to close its stream", `window.relay.state === "closed"`)
	streamClosed(1)
	want = append(want, pub("", "while hidden 1"), pub("", "while hidden 2"))
	if n := len(p.got()); n != 1 {
		t.Errorf("a hidden page got %d events, want 1 (closed)", n)
	}
	p.must("window.setHidden(false)", nil)
	p.waitSeq("the events published while hidden", want[2].seq)

	p.must(`window.dispatchEvent(new Event("offline"))`, nil)
	p.waitTrue("the page to close its stream offline", `window.relay.state === "closed"`)
	streamClosed(2)
	want = append(want, pub("", "while offline"))
	p.must(`window.dispatchEvent(new Event("online"))`, nil)
	p.waitSeq("the event published while offline", want[3].seq)
	sameEvents(t, "page", p.got(), want)
	rec := p.record()
	if !hasState(rec, "closed", "hidden") || !hasState(rec, "closed", "offline") {
		t.Errorf("states %v: want closed for hidden and for offline", rec.States)
	}
	if len(rec.Connected) < 3 {
		t.Errorf("%d connections, want at least 3 (one after visible, one after online)", len(rec.Connected))
	}
}

// TestDemoPage: the demo page at / connects with a pasted token, shows the
// state, the connection id and each event, and publishes from the page; a
// second tab gets the first tab's event, the first does not. The screenshot
// is written to $SSERELAY_SCREENSHOT_DIR (default: the test's temp dir).
func TestDemoPage(t *testing.T) {
	t.Parallel()
	const secret = "demo-secret"
	r := startRelay(t, relayOpts{Secret: secret, Args: []string{"--no-demo=false"}})
	r.freshStream(t)
	tok := token(t, secret, "alice", "--app", "demo", "--publish", "demo")
	b := startBrowser(t)
	tab1 := b.open(r.URL + "/#connect=1&app=demo&token=" + tok)
	tab2 := b.open(r.URL + "/#connect=1&app=demo&token=" + tok)
	for _, p := range []*page{tab1, tab2} {
		p.waitTrue("the demo to connect", `document.getElementById("state").textContent === "open"`)
	}
	for i, data := range []string{"hello from the backend", `{"todo":"buy milk","done":false}`, "two\nlines"} {
		event := []string{"", "note", "note"}[i]
		body := map[string]any{"app_id": "demo", "feed": "alice", "data": data}
		if event != "" {
			body["event"] = event
		}
		publishHTTP(t, r.URL, tok, body, nil)
	}
	// Tab 1 publishes with its connection id: only tab 2 shows it.
	tab1.must(`document.getElementById("pub-data").value = "published from tab 1"; document.getElementById("publish").click()`, nil)
	tab1.waitTrue("tab 1's publish result", `document.getElementById("pub-result").textContent.startsWith("published as #")`)
	tab2.waitTrue("tab 2 to show tab 1's event", `document.getElementById("log").textContent.includes("published from tab 1")`)
	tab1.waitTrue("tab 1 to show the backend's events", `document.getElementById("log").textContent.includes("two\nlines")`)
	var shown1 string
	tab1.must(`document.getElementById("log").textContent`, &shown1)
	if strings.Contains(shown1, "published from tab 1") {
		t.Errorf("tab 1 shows its own event:\n%s", shown1)
	}
	var conn, counts string
	tab1.must(`document.getElementById("conn").textContent`, &conn)
	tab2.must(`document.getElementById("counts").textContent`, &counts)
	if len(conn) < 8 || !strings.HasPrefix(counts, "4 events") {
		t.Errorf("tab 1 shows connection id %q; tab 2 counts %q, want 4 events", conn, counts)
	}

	png := tab2.screenshot()
	if len(png) < 8 || string(png[1:4]) != "PNG" {
		t.Fatalf("screenshot is not a PNG (%d bytes)", len(png))
	}
	dir := os.Getenv("SSERELAY_SCREENSHOT_DIR")
	if dir == "" {
		dir = t.TempDir()
	}
	path := filepath.Join(dir, "demo-page.png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", path, len(png))
}

// TestWebClientXHRRollover: the xhr transport keeps the whole response in
// responseText, so it reopens the request after xhrMaxBytes characters and
// resumes from its last id: nothing lost, nothing twice.
func TestWebClientXHRRollover(t *testing.T) {
	t.Parallel()
	const secret = "rollover-secret"
	r, _, p := webSetup(t, secret)
	pub := publisher(t, func() string { return r.URL }, func() string { return secret })
	tok := mintToken(t, secret, "alice", time.Hour)
	p.start(fast(map[string]any{"transport": "xhr", "token": tok, "xhrMaxBytes": 1500}))
	p.waitTrue("the page open", `window.relay.state === "open"`)
	var want []ev
	for i := 0; i < 12; i++ {
		want = append(want, pub("", fmt.Sprintf("%03d %s", i, strings.Repeat("x", 300))))
	}
	p.waitSeq("the last event", want[len(want)-1].seq)
	// More than xhrMaxBytes arrived: the request is reopened (perhaps only
	// after the last event).
	p.waitTrue("the request reopened", `window.rec.connected.length >= 2`)
	sameEvents(t, "page", p.got(), want)
}

// TestWebClientResync: a position the relay never had (another stream's
// incarnation) gets sserelay.reset unknown-id: onResync is called, and the
// live events that follow (with lower ids than the old position) arrive.
// The same through the polling fallback.
func TestWebClientResync(t *testing.T) {
	t.Parallel()
	const secret = "resync-secret"
	const future = "9999999999999999999"
	r, h, p := webSetup(t, secret)
	pub := publisher(t, func() string { return r.URL }, func() string { return secret })
	tok := mintToken(t, secret, "alice", time.Hour)
	p.start(fast(map[string]any{"transport": "fetch", "token": tok, "lastEventId": future}))
	p.waitTrue("the page open", `window.relay.state === "open"`)
	p.waitTrue("onResync", `window.rec.resyncs.length === 1`)
	want := []ev{pub("", "after the reset")}
	p.waitSeq("the live event", want[0].seq)
	sameEvents(t, "page", p.got(), want)
	if rec := p.record(); rec.Resyncs[0] != "unknown-id" {
		t.Errorf("resyncs %v, want [unknown-id]", rec.Resyncs)
	}

	// A second page that can only poll.
	h.blockSSE.Store(true)
	q := p.b.open(h.srv.URL + "/page")
	q.start(fast(map[string]any{"token": tok, "lastEventId": future, "hiddenTimeout": -1}))
	q.waitTrue("the second page to poll and resync", `window.relay.state === "polling" && window.rec.resyncs.length === 1`)
	want2 := []ev{pub("", "polled after the reset")}
	q.waitSeq("the polled event", want2[0].seq)
	sameEvents(t, "polling page", q.got(), want2)
	if rec := q.record(); rec.Resyncs[0] != "unknown-id" {
		t.Errorf("polling page: resyncs %v, want [unknown-id]", rec.Resyncs)
	}
}
