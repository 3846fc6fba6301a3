package relay

import (
	_ "embed"
	"net/http"
)

//go:embed web/client.js
var clientJS []byte

//go:embed web/index.html
var demoHTML []byte

func serveClientJS(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
	w.Header().Set("Cache-Control", "public, max-age=300")
	_, _ = w.Write(clientJS)
}

func serveDemo(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	_, _ = w.Write(demoHTML)
}
