package relay

import (
	"context"
	"fmt"
	"net/http"
	"runtime"
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
	if _, err := r.js.Stream(ctx, r.cfg.Stream); err != nil {
		writeError(w, http.StatusServiceUnavailable, "not ready: stream "+r.cfg.Stream+": "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// serveMetrics answers GET /metrics in the Prometheus text format.
func (r *Relay) serveMetrics(w http.ResponseWriter, _ *http.Request) {
	m := r.metrics
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	gauge := func(name, help string, v any) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s gauge\n%s %v\n", name, help, name, name, v)
	}
	counter := func(name, help string, v uint64) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s counter\n%s %d\n", name, help, name, name, v)
	}
	ready := 0
	if r.Ready() == nil {
		ready = 1
	}
	gauge("sserelay_open_streams", "Open SSE streams.", r.hub.openStreams())
	gauge("sserelay_ready", "1 when the relay is ready to serve.", ready)
	gauge("sserelay_cursor", "Last stream sequence dispatched.", r.Cursor())
	gauge("sserelay_replays_active", "Resumes reading the store now.", len(r.replaySlots))
	gauge("sserelay_goroutines", "Goroutines of the process (an idle stream holds two).", runtime.NumGoroutine())
	counter("sserelay_consumer_replaced_total", "Times the stream consumer was replaced (missed heartbeats, deleted, a gap, a reconnect).", m.consumerReplaced.Load())
	counter("sserelay_events_delivered_total", "Events written to clients, live and replayed.", m.delivered.Load())
	counter("sserelay_events_dispatched_total", "Events read from the stream.", m.dispatched.Load())
	counter("sserelay_events_dropped_total", "Events dropped because their subject or Sse-Event header cannot be written safely.", m.dropped.Load())
	counter("sserelay_replays_total", "Resumes that read the store.", m.replays.Load())
	counter("sserelay_store_replays_total", "Resumes that read the store because the in-memory ring did not hold their position.", m.storeReplays.Load())
	counter("sserelay_events_replayed_total", "Events read from the store for resumes.", m.replayed.Load())
	counter("sserelay_queue_overflows_total", "Slow clients whose queue overflowed and who caught up from the store.", m.overflows.Load())
	counter("sserelay_streams_rejected_total", "Stream requests refused with a 4xx status.", m.rejected.Load())
	counter("sserelay_streams_shed_total", "Stream requests asked to retry later because of --max-streams.", m.shed.Load())
	fmt.Fprintf(w, "# HELP sserelay_resets_total Reset events sent, by reason.\n# TYPE sserelay_resets_total counter\n")
	fmt.Fprintf(w, "sserelay_resets_total{reason=%q} %d\n", ResetHistoryGone, m.resetGone.Load())
	fmt.Fprintf(w, "sserelay_resets_total{reason=%q} %d\n", ResetUnknownID, m.resetUnkn.Load())
	counter("sserelay_published_total", "Events published through POST /v1/publish.", m.published.Load())
	counter("sserelay_publish_errors_total", "POST /v1/publish requests that failed after validation.", m.pubErrors.Load())
}
