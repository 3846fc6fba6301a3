package relay

import (
	"fmt"
	"net/http"
	"runtime"
	"sync/atomic"
)

// metrics are the relay's counters, exposed in the Prometheus text format.
// A handful of atomics needs no client library.
type metrics struct {
	delivered    atomic.Uint64 // events written to clients (live and replayed)
	dispatched   atomic.Uint64 // events read from the stream by the dispatcher
	dropped      atomic.Uint64 // events that cannot be written safely
	replays      atomic.Uint64
	replayed     atomic.Uint64
	storeReplays atomic.Uint64 // resumes that had to read the store
	overflows    atomic.Uint64
	rejected     atomic.Uint64 // streams refused with 4xx
	shed         atomic.Uint64 // streams sent away by --max-streams
	resetGone    atomic.Uint64
	resetUnkn    atomic.Uint64
	published    atomic.Uint64
	pubErrors    atomic.Uint64
}

func newMetrics() *metrics { return &metrics{} }

func (m *metrics) resets(reason string) *atomic.Uint64 {
	if reason == ResetUnknownID {
		return &m.resetUnkn
	}
	return &m.resetGone
}

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
	gauge("sserelay_open_streams", "Open SSE streams.", r.open.Load())
	gauge("sserelay_ready", "1 when the relay is ready to serve.", ready)
	gauge("sserelay_cursor", "Last stream sequence dispatched.", r.Cursor())
	gauge("sserelay_replays_active", "Resumes reading the store now.", len(r.replaySlots))
	gauge("sserelay_goroutines", "Goroutines of the process (an idle stream holds two).", runtime.NumGoroutine())
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
