package e2e_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// webHarness serves test pages and tokens on one origin and passes every
// other request on to the relay (a real reverse proxy on loopback, which can
// refuse event streams, as some corporate proxies do). The page imports the
// relay's own /v1/client.js through it.
type webHarness struct {
	t   *testing.T
	srv *httptest.Server

	mu     sync.Mutex
	relay  *relayProc
	secret string
	ttl    time.Duration

	blockSSE atomic.Bool // refuse text/event-stream responses with 502
	// how each connection id sent its token to /v1/events: "query",
	// "header" and/or "cookie"
	tokenVia map[string]map[string]bool
	tokens   atomic.Int32 // tokens handed out by /token
	blocked  atomic.Int32 // streams refused
}

var errSSEBlocked = errors.New("event streams are blocked by this proxy")

// clientPage is the test page: start(opts) connects with /v1/client.js and
// records every callback in window.rec.
const clientPage = `<!doctype html>
<html><head><meta charset="utf-8"><title>client.js e2e</title></head><body><pre id="log"></pre>
<script type="module">
import { connect } from "/v1/client.js";
window.rec = { events: [], states: [], resyncs: [], connected: [], errors: [], tokens: 0 };
window.start = (o) => {
  const rec = window.rec;
  const opts = Object.assign({ appId: "app" }, o, {
    onEvent(ev) { rec.events.push({ id: ev.id, event: ev.event, data: ev.data, state: window.relay.state }); },
    onResync(reason) { rec.resyncs.push(reason); },
    onConnected(info) { rec.connected.push(Object.assign({ lastEventId: window.relay ? window.relay.lastEventId : "" }, info)); },
    onStateChange(state, info) { rec.states.push([state, info.reason || "", info.message || ""]); },
    onError(err) { rec.errors.push(String(err && err.message || err)); },
  });
  if (o.useGetToken) opts.getToken = async () => { rec.tokens++; return (await fetch("/token")).text(); };
  window.relay = connect(opts);
  return window.relay.connectionId;
};
window.setHidden = (hidden) => {
  Object.defineProperty(document, "visibilityState", { configurable: true, get: () => hidden ? "hidden" : "visible" });
  Object.defineProperty(document, "hidden", { configurable: true, get: () => hidden });
  document.dispatchEvent(new Event("visibilitychange"));
};
</script></body></html>`

func newWebHarness(t *testing.T, r *relayProc, secret string) *webHarness {
	t.Helper()
	h := &webHarness{t: t, relay: r, secret: secret, ttl: time.Hour, tokenVia: map[string]map[string]bool{}}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			h.mu.Lock()
			u, _ := url.Parse(h.relay.URL)
			if in := pr.In; in.URL.Path == "/v1/events" {
				conn := in.URL.Query().Get("connection_id")
				if h.tokenVia[conn] == nil {
					h.tokenVia[conn] = map[string]bool{}
				}
				if in.URL.Query().Has("access_token") {
					h.tokenVia[conn]["query"] = true
				}
				if in.Header.Get("Authorization") != "" {
					h.tokenVia[conn]["header"] = true
				}
				if _, err := in.Cookie("sserelay_token"); err == nil {
					h.tokenVia[conn]["cookie"] = true
				}
			}
			h.mu.Unlock()
			pr.SetURL(u)
		},
		FlushInterval: -1,
		ModifyResponse: func(resp *http.Response) error {
			if h.blockSSE.Load() && strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
				h.blocked.Add(1)
				return errSSEBlocked
			}
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadGateway)
			b, _ := json.Marshal(map[string]string{"error": "proxy: " + err.Error()})
			_, _ = w.Write(b)
		},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /page", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write([]byte(clientPage))
	})
	mux.HandleFunc("GET /token", func(w http.ResponseWriter, _ *http.Request) {
		h.tokens.Add(1)
		h.mu.Lock()
		secret, ttl := h.secret, h.ttl
		h.mu.Unlock()
		_, _ = w.Write([]byte(mintToken(t, secret, "alice", ttl)))
	})
	// What an app's backend sees of relay.fetch(): the X-Connection-Id header.
	mux.HandleFunc("POST /api/echo-connection-id", func(w http.ResponseWriter, req *http.Request) {
		_, _ = w.Write([]byte(req.Header.Get("X-Connection-Id")))
	})
	mux.Handle("/", proxy)
	h.srv = httptest.NewServer(mux)
	t.Cleanup(h.srv.Close)
	return h
}

// mintToken signs an HS256 token for sub with app "app" (read and publish).
func mintToken(t *testing.T, secret, sub string, ttl time.Duration) string {
	t.Helper()
	claims := jwt.MapClaims{"sub": sub, "apps": []string{"app"}, "publish": []string{"app"}, "exp": time.Now().Add(ttl).Unix()}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (h *webHarness) setRelay(r *relayProc, secret string) {
	h.mu.Lock()
	h.relay, h.secret = r, secret
	h.mu.Unlock()
}

// pageRecord is window.rec.
type pageRecord struct {
	Events []struct {
		ID, Event, Data, State string
	}
	States    [][3]string
	Resyncs   []string
	Connected []struct {
		ConnectionID string `json:"connection_id"`
		User         string
		LastEventID  string `json:"lastEventId"`
	}
	Errors []string
	Tokens int
}

func (p *page) record() pageRecord {
	p.b.t.Helper()
	var rec pageRecord
	p.must("window.rec", &rec)
	return rec
}

// start connects the page with opts (JSON) and returns its connection id.
func (p *page) start(opts map[string]any) string {
	p.b.t.Helper()
	p.waitTrue("the page's module", "typeof window.start === 'function'")
	b, _ := json.Marshal(opts)
	var id string
	p.must("window.start("+string(b)+")", &id)
	return id
}

// got returns the page's events as ev values.
func (p *page) got() []ev {
	var out []ev
	for _, e := range p.record().Events {
		seq, _ := strconv.ParseUint(e.ID, 10, 64)
		name := e.Event
		if name == "message" {
			name = ""
		}
		out = append(out, ev{seq, name, e.Data})
	}
	return out
}

// waitSeq waits until the page delivered the event with sequence seq.
func (p *page) waitSeq(what string, seq uint64) {
	p.b.t.Helper()
	p.waitTrue(what, fmt.Sprintf("window.rec.events.some((e) => e.id === %q)", strconv.FormatUint(seq, 10)))
}

func (p *page) dump() string {
	var rec pageRecord
	if err := p.eval("window.rec", &rec); err != nil {
		return err.Error()
	}
	b, _ := json.MarshalIndent(rec, "  ", "  ")
	return string(b)
}

// fast are client options that make the reconnect logic quick for tests.
func fast(o map[string]any) map[string]any {
	base := map[string]any{"backoffMin": 50, "backoffMax": 400, "retry": 100, "pollInterval": 200, "probeInterval": 1500, "hiddenTimeout": 300}
	for k, v := range o {
		base[k] = v
	}
	return base
}

func sameEvents(t *testing.T, who string, got, want []ev) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("%s got\n  %v\nwant (each once, in order)\n  %v", who, got, want)
	}
}

// TestWebClientTransportsAndExclusion: four pages of one user, one per
// transport (eventsource with the token in the query, fetch, xhr, and
// eventsource with the token in the cookie); each publishes through
// relay.publish with its connection id: every page gets the events of the
// others and of the backend, never its own. fetch and xhr never put the
// token in a URL. A fifth page asks for a feed its token does not grant.
func TestWebClientTransportsAndExclusion(t *testing.T) {
	t.Parallel()
	const secret = "webclient-secret"
	r := startRelay(t, relayOpts{Secret: secret})
	r.freshStream(t)
	h := newWebHarness(t, r, secret)
	b := startBrowser(t)
	tok := mintToken(t, secret, "alice", time.Hour)

	// eventsource+cookie: the token in the sserelay_token cookie, not the URL.
	transports := []string{"eventsource", "fetch", "xhr", "eventsource+cookie"}
	// How each page must send its token, and how never (the cookie, once
	// set, goes along with every request of the origin).
	wantVia := []string{"query", "header", "header", "cookie"}
	neverVia := []string{"header", "query", "query", "query header"}
	var pages []*page
	conns := map[string]int{}
	for i, tr := range transports {
		p := b.open(h.srv.URL + "/page")
		// Only the last tab opened is visible: the others must not close
		// their streams for it.
		o := map[string]any{"transport": tr, "token": tok, "events": []string{"note"}, "hiddenTimeout": -1}
		if tr == "eventsource+cookie" {
			p.must(fmt.Sprintf(`document.cookie = "sserelay_token=%s; path=/; SameSite=Strict"`, tok), nil)
			o["transport"], o["tokenIn"] = "eventsource", "cookie"
		}
		conns[p.start(fast(o))] = i
		pages = append(pages, p)
	}
	t.Cleanup(func() {
		if t.Failed() {
			for i, p := range pages {
				t.Logf("page %s:\n  %s", transports[i], p.dump())
			}
		}
	})
	for i, p := range pages {
		p.waitTrue(transports[i]+" page open", `window.relay.state === "open"`)
	}
	pub := func(event, data string) ev {
		t.Helper()
		body := map[string]any{"app_id": "app", "feed": "alice", "data": data}
		if event != "" {
			body["event"] = event
		}
		return ev{publishHTTP(t, r.URL, tok, body, nil), event, data}
	}
	all := []ev{pub("", "from the backend"), pub("note", "two\nlines")}
	own := make([]ev, len(pages))
	for i, p := range pages {
		var seq uint64
		p.must(fmt.Sprintf(`window.relay.publish({feed: "alice", event: "note", data: "from %s"})`, transports[i]), &seq)
		own[i] = ev{seq, "note", "from " + transports[i]}
		all = append(all, own[i])
	}
	end := pub("", "end")

	h.mu.Lock()
	for conn, via := range h.tokenVia {
		i, ok := conns[conn]
		if !ok {
			continue
		}
		if !via[wantVia[i]] {
			t.Errorf("%s page sent its token by %v, want by %s", transports[i], via, wantVia[i])
		}
		for _, never := range strings.Fields(neverVia[i]) {
			if via[never] {
				t.Errorf("%s page sent its token by %s", transports[i], never)
			}
		}
	}
	h.mu.Unlock()

	// A feed the token does not grant: 403, which no reconnect can mend.
	// The EventSource cannot see the status; the client asks with one poll.
	denied := b.open(h.srv.URL + "/page")
	denied.start(fast(map[string]any{"token": tok, "feeds": []string{"bob"}, "hiddenTimeout": -1}))
	denied.waitTrue("the page refused for good", `window.relay.state === "closed"`)
	if st := denied.record().States; len(st) == 0 || st[len(st)-1][1] != "forbidden" || !strings.Contains(st[len(st)-1][2], `does not grant feed "bob"`) {
		t.Errorf("refused page: states %v, want closed, forbidden, with the relay's reason", st)
	}

	for i, p := range pages {
		p.waitSeq(transports[i]+" page gets the last event", end.seq)
		var want []ev
		for _, e := range all {
			if e != own[i] {
				want = append(want, e)
			}
		}
		sameEvents(t, transports[i]+" page", p.got()[:len(p.got())-1], want)
		var echoed, id string
		p.must(`window.relay.fetch("/api/echo-connection-id", {method: "POST", headers: {"X-Other": "1"}}).then((r) => r.text())`, &echoed)
		p.must(`window.relay.connectionId`, &id)
		if echoed != id || len(id) < 8 {
			t.Errorf("%s page: relay.fetch sent X-Connection-Id %q, want the connection id %q", transports[i], echoed, id)
		}
		rec := p.record()
		if len(rec.Connected) == 0 || rec.Connected[0].User != "alice" {
			t.Errorf("%s page: connected %+v, want alice's", transports[i], rec.Connected)
		}
	}
}
