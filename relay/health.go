package relay

import (
	"context"
	"net/http"
	"time"
)

// serveHealthz answers GET /healthz: the process is alive.
func serveHealthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// serveReadyz answers GET /readyz: 200 while [Relay.Ready] holds and the
// stream answers, 503 otherwise.
func (r *Relay) serveReadyz(w http.ResponseWriter, req *http.Request) {
	if err := r.Ready(); err != nil {
		writeError(w, http.StatusServiceUnavailable, "not ready: "+err.Error())
		return
	}
	// The consumer retries for ever when its stream is gone, so ask
	// JetStream too: a probe every few seconds is one cheap request.
	ctx, cancel := context.WithTimeout(req.Context(), 2*time.Second)
	defer cancel()
	st, err := r.js.Stream(ctx, r.cfg.Stream)
	if err != nil {
		writeError(w, http.StatusServiceUnavailable, "not ready: stream "+r.cfg.Stream+": "+err.Error())
		return
	}
	// The stream's last sequence keeps the consumer lag true when the
	// consumer delivers nothing, the case in which it matters most.
	r.metrics.sawLast(st.CachedInfo().State.LastSeq)
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}
