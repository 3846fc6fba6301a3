package relay

import (
	_ "embed"
	"net/http"
)

// The browser module, its TypeScript declarations and the demo page are
// embedded: the relay serves its own client, so a page never loads a
// version that does not match the server.

//go:embed web/client.js
var clientJS []byte

//go:embed web/client.d.ts
var clientDTS []byte

//go:embed web/index.html
var demoHTML []byte

// webRoutes adds the client module, its declarations and (unless demo is
// false) the demo page at "/" to mux.
func webRoutes(mux *http.ServeMux, demo bool) {
	mux.HandleFunc("GET /v1/client.js", serveClientJS)
	mux.HandleFunc("GET /v1/client.d.ts", serveClientDTS)
	if demo {
		mux.HandleFunc("GET /{$}", serveDemo)
	}
}

func serveStatic(w http.ResponseWriter, contentType string, body []byte) {
	h := w.Header()
	h.Set("Content-Type", contentType)
	h.Set("X-Content-Type-Options", "nosniff")
	_, _ = w.Write(body)
}

func serveClientJS(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Cache-Control", "public, max-age=300")
	serveStatic(w, "text/javascript; charset=utf-8", clientJS)
}

func serveClientDTS(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Cache-Control", "public, max-age=300")
	serveStatic(w, "application/typescript; charset=utf-8", clientDTS)
}

func serveDemo(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Cache-Control", "no-cache")
	// The page loads nothing but itself and /v1/client.js from its origin.
	w.Header().Set("Content-Security-Policy", "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'")
	serveStatic(w, "text/html; charset=utf-8", demoHTML)
}
