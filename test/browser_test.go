package e2e_test

import (
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// browserRecord is what the page POSTs for every EventSource callback.
type browserRecord struct {
	N           int    `json:"n"`
	Kind        string `json:"kind"` // open, error, message, connected, reset, tick
	Type        string `json:"type"`
	LastEventID string `json:"lastEventId"`
	Data        string `json:"data"`
	ReadyState  int    `json:"readyState"`
}

var browserPage = template.Must(template.New("page").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>sserelay e2e</title></head><body><pre id="log"></pre>
<script>
const relay = {{.Relay}};
const tok = {{.Token}};
let n = 0;
const es = new EventSource(relay + "/v1/events?app_id=app&connection_id=browser-conn-1&access_token=" + encodeURIComponent(tok));
function report(kind, e) {
  const rec = {n: n++, kind: kind, type: e.type, lastEventId: e.lastEventId || "",
               data: typeof e.data === "string" ? e.data : "", readyState: es.readyState};
  document.getElementById("log").textContent += JSON.stringify(rec) + "\n";
  fetch("/log", {method: "POST", body: JSON.stringify(rec), keepalive: true});
}
es.onopen = e => report("open", e);
es.onerror = e => report("error", e);
es.onmessage = e => report("message", e);
for (const name of ["sserelay.connected", "sserelay.reset", "sserelay.token-expired", "tick"]) {
  es.addEventListener(name, e => report(name.replace("sserelay.", ""), e));
}
</script></body></html>
`))

// TestBrowserEventSourceReconnect: headless Chromium's own EventSource
// reconnects after the relay is killed and restarted on the same port and
// data dir, sends Last-Event-ID, and gets every event exactly once, in order.
func TestBrowserEventSourceReconnect(t *testing.T) {
	t.Parallel()
	chromium := tool(t, "SSERELAY_CHROMIUM", "/usr/bin/chromium", "chromium", "chromium-browser")
	const secret = "browser-secret"

	var (
		mu      sync.Mutex
		records []browserRecord
	)
	var relayURL, tok string // set before the page is loaded
	page := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		switch {
		case req.Method == http.MethodGet && req.URL.Path == "/":
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			mu.Lock()
			params := map[string]string{"Relay": relayURL, "Token": tok}
			mu.Unlock()
			_ = browserPage.Execute(w, params)
		case req.Method == http.MethodPost && req.URL.Path == "/log":
			var rec browserRecord
			b, _ := io.ReadAll(req.Body)
			if err := json.Unmarshal(b, &rec); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			mu.Lock()
			records = append(records, rec)
			mu.Unlock()
			w.WriteHeader(http.StatusNoContent)
		default:
			http.NotFound(w, req)
		}
	}))
	t.Cleanup(page.Close)
	if !strings.HasPrefix(page.URL, "http://127.0.0.1:") {
		t.Fatalf("test server on %s, want loopback", page.URL)
	}

	dataDir := t.TempDir()
	args := []string{"--cors-origins", page.URL, "--retry", "500ms"}
	r := startRelay(t, relayOpts{Secret: secret, DataDir: dataDir, Args: args})
	base := r.freshStream(t)
	tk := token(t, secret, "alice", "--app", "app", "--publish", "app")
	mu.Lock()
	relayURL, tok = r.URL, tk
	mu.Unlock()

	// sorted returns the records in the page's order (the POSTs may race).
	sorted := func() []browserRecord {
		mu.Lock()
		defer mu.Unlock()
		out := slices.Clone(records)
		slices.SortFunc(out, func(a, b browserRecord) int { return a.N - b.N })
		return out
	}
	count := func(kind string) int {
		n := 0
		for _, rec := range sorted() {
			if rec.Kind == kind {
				n++
			}
		}
		return n
	}
	hasID := func(id uint64) bool {
		for _, rec := range sorted() {
			if (rec.Kind == "message" || rec.Kind == "tick") && rec.LastEventID == strconv.FormatUint(id, 10) {
				return true
			}
		}
		return false
	}
	dump := func() string {
		var b strings.Builder
		for _, rec := range sorted() {
			fmt.Fprintf(&b, "  %+v\n", rec)
		}
		return b.String()
	}
	waitBrowser := func(what string, cond func() bool) {
		t.Helper()
		eventually(t, waitLong, what, cond)
	}

	home := t.TempDir()
	cmd := exec.Command(chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-proxy-server", "--log-level=3",
		"--user-data-dir="+t.TempDir(), page.URL+"/")
	cmd.Env = cleanEnv("HOME="+home, "XDG_CONFIG_HOME="+home, "XDG_CACHE_HOME="+home)
	startProc(t, "chromium", cmd)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("browser records:\n%s", dump())
		}
	})
	waitBrowser("the page's EventSource to get sserelay.connected", func() bool { return count("connected") >= 1 })

	pub := func(event, data string, hdr map[string]string) ev {
		t.Helper()
		body := map[string]any{"app_id": "app", "feed": "alice", "data": data}
		if event != "" {
			body["event"] = event
		}
		return ev{publishHTTP(t, r.URL, tk, body, hdr), event, data}
	}
	publish := func(event, data string) ev { t.Helper(); return pub(event, data, nil) }
	// Events the page itself "sent": EventSource keeps its URL, so the
	// connection_id, and the exclusion, survive the reconnect.
	fromPage := map[string]string{"X-Connection-Id": "browser-conn-1"}
	var want []ev
	want = append(want, publish("", "one"), publish("tick", "two"))
	pub("", "sent by the page, before", fromPage)
	want = append(want, publish("", "three\nlines\nhere"))
	waitBrowser("the first 3 events in the browser", func() bool { return hasID(want[2].seq) })

	// SIGKILL: the connection breaks without a clean end. Nothing is
	// published while the relay is down (its NATS is embedded).
	r.kill()
	waitBrowser("the browser to notice the broken stream", func() bool { return count("error") >= 1 })
	r = startRelay(t, relayOpts{Secret: secret, DataDir: dataDir, Listen: r.Addr, Args: args})
	if got := r.lastSeqAtStart(t); got != want[2].seq {
		t.Errorf("after restart: last_seq %d, want %d", got, want[2].seq)
	}
	// One event right away (replayed or live, depending on when the browser
	// is back), then two once it certainly is back, then a last one that
	// bounds the search for duplicates.
	pub("", "sent by the page, after", fromPage)
	want = append(want, publish("", "four"))
	waitBrowser("the browser to reconnect on its own", func() bool { return count("connected") >= 2 })
	want = append(want, publish("tick", "five"), publish("", "six"))
	end := publish("", "end")
	waitBrowser("the last event in the browser", func() bool { return hasID(end.seq) })

	var got []ev
	for _, rec := range sorted() {
		switch rec.Kind {
		case "message", "tick":
			seq, _ := strconv.ParseUint(rec.LastEventID, 10, 64)
			e := ev{seq, "", rec.Data}
			if rec.Kind == "tick" {
				e.event = "tick"
			}
			if seq != end.seq {
				got = append(got, e)
			}
		case "reset":
			t.Errorf("unexpected sserelay.reset: %+v", rec)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("browser got\n  %v\nwant (each once, in order)\n  %v", got, want)
	}
	if want[0].seq != base+1 || want[2].seq != base+4 {
		t.Errorf("first events: seqs %d, %d, want %d, %d", want[0].seq, want[2].seq, base+1, base+4)
	}

	// The browser resumed with Last-Event-ID = the third event's id: the
	// second connected event (which has no id) still shows it, and the new
	// relay logged it.
	var connected []browserRecord
	for _, rec := range sorted() {
		if rec.Kind == "connected" {
			connected = append(connected, rec)
		}
	}
	if len(connected) != 2 {
		t.Errorf("%d sserelay.connected events, want 2 (one per connection)", len(connected))
	} else {
		if connected[0].LastEventID != strconv.FormatUint(base, 10) {
			t.Errorf("first connected event: lastEventId %q, want %d", connected[0].LastEventID, base)
		}
		if connected[1].LastEventID != strconv.FormatUint(want[2].seq, 10) {
			t.Errorf("connected event after the reconnect: lastEventId %q, want %d", connected[1].LastEventID, want[2].seq)
		}
	}
	t.Logf("browser records:\n%s", dump())
	opened := r.waitJSON(t, "stream opened", nil)
	if opened["has_id"] != true || num(opened["last_event_id"]) != want[2].seq || opened["conn"] != "browser-conn-1" {
		t.Errorf("the reconnect reached the relay with has_id=%v last_event_id=%v conn=%v, want Last-Event-ID %d and conn browser-conn-1", opened["has_id"], opened["last_event_id"], opened["conn"], want[2].seq)
	}
}
