package relay

// The other endpoints: health, readiness, metrics, static pages, CORS.

import (
	"bytes"
	"net/http"
	"slices"
	"strings"
	"testing"
)

func TestEventsHealthReadyMetrics(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	wantJSON(t, do(t, http.MethodGet, e.url+"/healthz", nil, ""), `{"status":"ok"}`)
	wantJSON(t, do(t, http.MethodGet, e.url+"/readyz", nil, ""), `{"status":"ready"}`)

	m := do(t, http.MethodGet, e.url+"/metrics", nil, "")
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
	if got := e.metric("sserelay_open_streams"); got != 2 {
		t.Fatalf("sserelay_open_streams %v, want 2", got)
	}
	if got := e.metric("sserelay_events_delivered_total"); got != 3 {
		t.Fatalf("sserelay_events_delivered_total %v, want 3", got)
	}
	// Replayed events count as delivered too.
	r := e.open("app_id=demo&last_event_id=0", bearer(tok))
	r.Connected(t)
	r.ExpectIDs(t, a, b)
	if got := e.metric("sserelay_events_delivered_total"); got != 5 {
		t.Fatalf("sserelay_events_delivered_total %v after a replay of 2, want 5", got)
	}
	if got := e.metric("sserelay_open_streams"); got != 3 {
		t.Fatalf("sserelay_open_streams %v, want 3", got)
	}
	s1.Close()
	s2.Close()
	r.Close()
	eventually(t, waitLong, "sserelay_open_streams 0", func() bool { return e.metric("sserelay_open_streams") == 0 })
}

func TestEventsStaticPages(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	js := do(t, http.MethodGet, e.url+"/v1/client.js", nil, "")
	if js.Status != http.StatusOK || js.Header.Get("Content-Type") != "text/javascript; charset=utf-8" {
		t.Fatalf("client.js: %d %q", js.Status, js.Header.Get("Content-Type"))
	}
	if !bytes.Equal(js.Body, clientJS) || !bytes.Contains(js.Body, []byte("export function connect")) {
		t.Fatalf("client.js body is not the client module (%d bytes)", len(js.Body))
	}
	demo := do(t, http.MethodGet, e.url+"/", nil, "")
	if demo.Status != http.StatusOK || demo.Header.Get("Content-Type") != "text/html; charset=utf-8" || !bytes.Equal(demo.Body, demoHTML) {
		t.Fatalf("demo page: %d %q (%d bytes)", demo.Status, demo.Header.Get("Content-Type"), len(demo.Body))
	}
	wantError(t, do(t, http.MethodGet, e.url+"/nope", nil, ""), http.StatusNotFound, "not found")

	nd := newEnv(t, withConfig(func(c *Config) { c.NoDemo = true }))
	wantError(t, do(t, http.MethodGet, nd.url+"/", nil, ""), http.StatusNotFound, "not found")
	if r := do(t, http.MethodGet, nd.url+"/v1/client.js", nil, ""); r.Status != http.StatusOK || !bytes.Equal(r.Body, clientJS) {
		t.Fatalf("client.js with NoDemo: %d", r.Status)
	}
}

func TestEventsCORS(t *testing.T) {
	t.Parallel()
	const origin = "https://app.example"
	e := newEnv(t, withConfig(func(c *Config) { c.AllowedOrigins = []string{origin, "https://other.example"} }))
	preflight := func(u, origin, method string) httpResult {
		return do(t, http.MethodOptions, u, http.Header{
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
	noCORS := func(what string, r httpResult) {
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
	r := e.getEvents(t, "app_id=demo", http.Header{"Origin": {origin}})
	if r.Status != http.StatusUnauthorized || r.Header.Get("Access-Control-Allow-Origin") != origin {
		t.Fatalf("401 to an allowed origin: %d %v", r.Status, r.Header)
	}

	// Without AllowedOrigins there are no CORS headers at all.
	plain := newEnv(t)
	noCORS("preflight without AllowedOrigins", preflight(plain.url+"/v1/events?app_id=demo", origin, "GET"))
}

// TestWrongMethod: a path that exists answers another method with 405, the
// methods it takes in Allow and a JSON error, not with 404; an unknown path
// stays 404 whatever the method.
func TestWrongMethod(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	for _, c := range []struct{ method, path, allow string }{
		{http.MethodGet, "/v1/publish", "POST, OPTIONS"},
		{http.MethodPost, "/v1/events", "GET, HEAD, OPTIONS"},
		{http.MethodDelete, "/v1/events", "GET, HEAD, OPTIONS"},
		{http.MethodPost, "/healthz", "GET, HEAD, OPTIONS"},
		{http.MethodPut, "/metrics", "GET, HEAD, OPTIONS"},
	} {
		r := do(t, c.method, e.url+c.path, nil, "")
		wantError(t, r, http.StatusMethodNotAllowed, "method "+c.method+" not allowed: "+c.allow)
		if got := r.Header.Get("Allow"); got != c.allow {
			t.Errorf("%s %s: Allow %q, want %q", c.method, c.path, got, c.allow)
		}
	}
	wantError(t, do(t, http.MethodPost, e.url+"/nope", nil, ""), http.StatusNotFound, "not found")
	wantError(t, do(t, http.MethodPost, e.url+"/", nil, ""), http.StatusMethodNotAllowed, "method POST not allowed: GET, HEAD, OPTIONS")
}

// TestOptions: OPTIONS on a path that exists answers 204 with that path's
// methods in Allow (RFC 9110 9.3.7), with or without CORS; a preflight from
// an allowed origin gets the same methods in Access-Control-Allow-Methods;
// an unknown path is 404 whatever the method.
func TestOptions(t *testing.T) {
	t.Parallel()
	const origin = "https://app.example"
	paths := []struct{ path, allow string }{
		{"/v1/events?app_id=demo", "GET, HEAD, OPTIONS"},
		{"/v1/publish", "POST, OPTIONS"},
		{"/healthz", "GET, HEAD, OPTIONS"},
		{"/", "GET, HEAD, OPTIONS"},
	}
	want204 := func(what string, r httpResult, allow string) {
		t.Helper()
		if r.Status != http.StatusNoContent || len(r.Body) != 0 {
			t.Fatalf("%s: %d %s, want 204 without a body", what, r.Status, r.Body)
		}
		if got := r.Header.Get("Allow"); got != allow {
			t.Fatalf("%s: Allow %q, want %q", what, got, allow)
		}
	}
	plain := newEnv(t)
	cors := newEnv(t, withConfig(func(c *Config) { c.AllowedOrigins = []string{origin} }))
	for _, e := range []*testEnv{plain, cors} {
		for _, p := range paths {
			want204("OPTIONS "+p.path, do(t, http.MethodOptions, e.url+p.path, nil, ""), p.allow)
		}
		wantError(t, do(t, http.MethodOptions, e.url+"/nope", nil, ""), http.StatusNotFound, "not found")
	}
	for _, p := range paths {
		r := do(t, http.MethodOptions, cors.url+p.path, http.Header{"Origin": {origin}, "Access-Control-Request-Method": {"GET"}}, "")
		want204("preflight "+p.path, r, p.allow)
		if got := r.Header.Get("Access-Control-Allow-Methods"); got != p.allow {
			t.Fatalf("preflight %s: Access-Control-Allow-Methods %q, want %q", p.path, got, p.allow)
		}
		if got := r.Header.Get("Access-Control-Allow-Origin"); got != origin {
			t.Fatalf("preflight %s: Access-Control-Allow-Origin %q", p.path, got)
		}
	}
	r := do(t, http.MethodOptions, cors.url+"/nope", http.Header{"Origin": {origin}, "Access-Control-Request-Method": {"GET"}}, "")
	wantError(t, r, http.StatusNotFound, "not found")
	nd := newEnv(t, withConfig(func(c *Config) { c.NoDemo = true }))
	wantError(t, do(t, http.MethodOptions, nd.url+"/", nil, ""), http.StatusNotFound, "not found")
}
