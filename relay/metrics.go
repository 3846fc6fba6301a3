package relay

import (
	"fmt"
	"log/slog"
	"net/http"
	"runtime"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Where a replay read its events: the label of the replay metrics.
const (
	sourceRing     = 0 // the in-memory ring only
	sourceStore    = 1 // the store, for some or all of them (Direct Get)
	sourceConsumer = 2 // the store, most of it through a short-lived consumer
	numSources     = 3
)

var sourceNames = [numSources]string{sourceRing: "ring", sourceStore: "store", sourceConsumer: "consumer"}

// dispatchBuckets span a delivery on one host (well under a millisecond) to
// a relay seconds behind its stream (a NATS outage, a slow consumer).
var dispatchBuckets = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// replayBuckets span a ring resume of a few events to a 100,000-event read
// of the store (BenchmarkResume100k/store times it) and a storm waiting for
// a slot.
var replayBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}

// metrics are the relay's Prometheus collectors. Every labelled series the
// relay can produce is resolved when it starts, so the hot path touches
// plain counters: a delivery costs an atomic add, a dispatched event one
// histogram observation, whatever the number of recipients.
type metrics struct {
	delivered  prometheus.Counter
	dispatched prometheus.Counter
	dropped    prometheus.Counter
	// exclusionsIgnored counts events whose X-Connection-Id was ignored
	// for want of X-Connection-User.
	exclusionsIgnored prometheus.Counter
	bytes             prometheus.Counter
	latency           prometheus.Histogram
	overflows         prometheus.Counter
	rejected          prometheus.Counter
	shed              prometheus.Counter
	storeReplays      prometheus.Counter
	consumerFallbacks prometheus.Counter
	consumersBusy     prometheus.Counter
	published         prometheus.Counter
	pubErrors         prometheus.Counter

	replays      [numSources]prometheus.Counter  // by source
	replayed     [numSources]prometheus.Counter  // events, by source
	replayTime   [numSources]prometheus.Observer // by source
	resetGone    prometheus.Counter
	resetUnknown prometheus.Counter
	publishes    *prometheus.CounterVec // POST /v1/publish requests by status code
	publishOK    prometheus.Counter     // publishes' code 200
	replaced     *prometheus.CounterVec // stream consumer replacements, by reason

	limited      map[string]prometheus.Counter // requests refused by a per-user or per-address limit, by limit
	connOpen     prometheus.Gauge              // connections open on a Relay.Listener
	connRefused  prometheus.Counter            // connections closed at once by MaxConnections
	acceptErrors prometheus.Counter            // accepts that failed for want of file descriptors

	// streamLast is the highest last sequence of the stream seen so far,
	// for the lag: each dispatched message tells it (its sequence plus the
	// messages pending behind it), and so does the readiness probe's stream
	// info, which keeps the lag true while the consumer delivers nothing.
	streamLast atomic.Uint64

	all    []prometheus.Collector              // registered by register
	closed [numCloseReasons]prometheus.Counter // streams closed or sent away, by reason
}

func newMetrics() *metrics {
	m := &metrics{}
	counter := func(name, help string) prometheus.Counter {
		c := prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
		m.all = append(m.all, c)
		return c
	}
	// vec returns a counter vector with a series for each of values from
	// the start, at 0: rate() and alerts on increase() need the zero.
	vec := func(name, help, label string, values ...string) *prometheus.CounterVec {
		v := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, []string{label})
		for _, l := range values {
			v.WithLabelValues(l)
		}
		m.all = append(m.all, v)
		return v
	}

	m.delivered = counter("sserelay_events_delivered_total", "Events written to clients, live and replayed.")
	m.dispatched = counter("sserelay_events_dispatched_total", "Events read from the stream by the dispatcher.")
	m.dropped = counter("sserelay_events_dropped_total", "Events dropped by the dispatcher because their subject or Sse-Event header cannot be written safely, or their NATS header block cannot be decoded.")
	m.exclusionsIgnored = counter("sserelay_exclusions_ignored_total", "Events whose X-Connection-Id excluded no one because they carry no X-Connection-User (see --exclusion-without-user).")
	m.bytes = counter("sserelay_bytes_written_total", "Bytes written to stream clients: events, keepalives, the relay's own events and response heads.")
	m.latency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "sserelay_dispatch_latency_seconds",
		Help:    "Time from an event's publication (its timestamp in the stream) until the dispatcher has written it to the idle streams that want it and queued it for the busy ones.",
		Buckets: dispatchBuckets,
	})
	m.all = append(m.all, m.latency)
	m.overflows = counter("sserelay_queue_overflows_total", "Slow clients whose queue overflowed and who caught up from the store.")
	m.rejected = counter("sserelay_streams_rejected_total", "Stream requests refused with a 4xx status.")
	m.shed = counter("sserelay_streams_shed_total", "Stream requests asked to retry later because MaxStreams streams were open.")
	m.consumerFallbacks = counter("sserelay_replay_consumer_fallbacks_total", "Long catch-ups that could not create or use a short-lived consumer to read the store and read it with Direct Get instead.")
	m.consumersBusy = counter("sserelay_replay_consumers_busy_total", "Long catch-ups of a subject that read it with Direct Get because the relay held --replay-consumers short-lived consumers already.")
	m.storeReplays = counter("sserelay_store_replays_total", "Replays (stream catch-ups and poll=1 requests) that read the store because the in-memory ring did not hold their position.")
	m.published = counter("sserelay_published_total", "Events published through POST /v1/publish.")
	m.pubErrors = counter("sserelay_publish_errors_total", "POST /v1/publish requests that failed after validation.")

	replays := vec("sserelay_replays_total", "Stream catch-ups (resumes with Last-Event-ID, queue overflows) that replayed events, by source: ring (memory only), store (Direct Get) or consumer (a long read of the store through a short-lived JetStream consumer).", "source")
	replayed := vec("sserelay_events_replayed_total", "Events sent by stream catch-ups, by the source they came from.", "source")
	replayTime := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "sserelay_replay_duration_seconds",
		Help:    "Duration of stream catch-ups, the wait for a replay slot included, by source.",
		Buckets: replayBuckets,
	}, []string{"source"})
	m.all = append(m.all, replayTime)
	for i, s := range sourceNames {
		m.replays[i] = replays.WithLabelValues(s)
		m.replayed[i] = replayed.WithLabelValues(s)
		m.replayTime[i] = replayTime.WithLabelValues(s)
	}
	resets := vec("sserelay_resets_total", "sserelay.reset events sent, by reason.", "reason")
	m.resetGone, m.resetUnknown = resets.WithLabelValues(ResetHistoryGone), resets.WithLabelValues(ResetUnknownID)
	m.replaced = vec("sserelay_consumer_replaced_total", "Replacements of the stream consumer, by reason: no-heartbeat, deleted, sequence-gap, reconnect, no-responders.", "reason",
		recreateNoHeartbeat, recreateDeleted, recreateGap, recreateReconnect, recreateNoResponder)
	closed := vec("sserelay_streams_closed_total", "Streams closed or sent away, by reason: client-gone, draining, token-expired, write-timeout, write-error, store-error, shutdown-abort, shed, protocol-violation (bytes sent after a stream request).", "reason")
	for r := range numCloseReasons {
		m.closed[r] = closed.WithLabelValues(r.String())
	}
	m.publishes = vec("sserelay_publish_requests_total", "POST /v1/publish requests, by HTTP status code.", "code", "200", "400", "401", "403", "408", "413", "429", "503")
	m.publishOK = m.publishes.WithLabelValues("200")
	limited := vec("sserelay_limited_total", "Requests refused by a per-user or per-address limit, by limit: streams-per-user, user-stream-rate, ip-stream-rate (stream and poll requests), publish-rate, poll-replay-busy.", "limit", limitNames...)
	m.limited = make(map[string]prometheus.Counter, len(limitNames))
	for _, l := range limitNames {
		m.limited[l] = limited.WithLabelValues(l)
	}
	m.connOpen = prometheus.NewGauge(prometheus.GaugeOpts{Name: "sserelay_connections_open", Help: "Client connections open on the relay's listener (streams taken over from net/http included)."})
	m.all = append(m.all, m.connOpen)
	m.connRefused = counter("sserelay_connections_refused_total", "Client connections closed as soon as accepted because MaxConnections were open.")
	m.acceptErrors = counter("sserelay_accept_errors_total", "Accepts that failed because the process or the system ran out of file descriptors.")
	return m
}

// register adds the metrics, and gauges that r computes when scraped, to reg.
func (m *metrics) register(reg prometheus.Registerer, r *Relay) error {
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	all := append(m.all[:len(m.all):len(m.all)],
		gauge("sserelay_open_streams", "Open SSE streams.", func() float64 { return float64(r.hub.openStreams()) }),
		gauge("sserelay_ready", "1 when the relay is ready to serve (GET /readyz would say 200 but for the stream probe).", func() float64 { return boolFloat(r.Ready() == nil) }),
		// A scrape reads the cursor without the hub's lock: it never waits
		// for the dispatcher, nor makes it wait.
		gauge("sserelay_cursor", "Last stream sequence dispatched.", func() float64 { return float64(r.hub.seen.Load()) }),
		gauge("sserelay_consumer_lag", "Events stored in the stream and not dispatched yet: the stream's last sequence, as last seen, minus the cursor.", func() float64 {
			return float64(lag(m.streamLast.Load(), r.hub.seen.Load()))
		}),
		gauge("sserelay_consumer_delivering", "1 while a stream consumer is delivering, 0 while it is being replaced or stopped.", func() float64 {
			return boolFloat(r.consumer.Load().delivering())
		}),
		gauge("sserelay_replays_active", "Catch-ups holding one of the MaxReplays replay slots now.", func() float64 { return float64(len(r.replaySlots)) }),
		gauge("sserelay_replay_consumers", "Short-lived consumers the relay's catch-ups hold on the stream now (at most --replay-consumers).", func() float64 { return float64(len(r.replayConsumers)) }),
		gauge("sserelay_goroutines", "Goroutines of the process (an idle taken-over stream holds none on Linux).", func() float64 { return float64(runtime.NumGoroutine()) }),
	)
	for _, c := range all {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("relay: register metrics (one registry serves one relay): %w", err)
		}
	}
	return nil
}

func lag(last, cursor uint64) uint64 {
	if last <= cursor {
		return 0
	}
	return last - cursor
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// resets returns the counter of the reset events sent for reason.
func (m *metrics) resets(reason string) prometheus.Counter {
	if reason == ResetUnknownID {
		return m.resetUnknown
	}
	return m.resetGone
}

// consumed records what one message from the stream tells: the latency
// from its publication to its dispatch, and the stream's last sequence.
// The dispatcher calls it once per message, after delivering it.
func (m *metrics) consumed(meta *jetstream.MsgMetadata) {
	m.sawLast(meta.Sequence.Stream + meta.NumPending)
	d := time.Since(meta.Timestamp)
	if d < 0 {
		d = 0 // the clock of the stream's leader is ahead of ours
	}
	m.latency.Observe(d.Seconds())
}

// sawLast raises the known last sequence of the stream to last. The
// highest value wins: a late probe or message cannot lower it.
func (m *metrics) sawLast(last uint64) {
	for {
		cur := m.streamLast.Load()
		if last <= cur || m.streamLast.CompareAndSwap(cur, last) {
			return
		}
	}
}

// consumerReplaced counts a replacement of the stream consumer; reason is
// one of the recreate constants (a label: never an error's text).
func (m *metrics) consumerReplaced(reason string) { m.replaced.WithLabelValues(reason).Inc() }

// replayStats say where the events of one replay came from.
type replayStats struct {
	ring, store int  // events emitted from each
	readStore   bool // the ring did not hold the whole range
	consumer    bool // ... and it read the store through a consumer
}

// caughtUp records one stream catch-up that took since start.
func (m *metrics) caughtUp(st replayStats, start time.Time) {
	src, store := sourceRing, sourceStore
	if st.consumer {
		store = sourceConsumer
	}
	if st.readStore {
		src = store
	}
	m.replays[src].Inc()
	m.replayTime[src].Observe(time.Since(start).Seconds())
	m.replayed[sourceRing].Add(float64(st.ring))
	m.replayed[store].Add(float64(st.store))
}

// countPublish counts a POST /v1/publish answered with status: the
// handler counts what it writes (a wrapper of its ResponseWriter, as
// promhttp's, costs an allocation and a label lookup per request).
func (m *metrics) countPublish(status int) {
	if status == http.StatusOK {
		m.publishOK.Inc()
		return
	}
	m.publishes.WithLabelValues(strconv.Itoa(status)).Inc()
}

// MetricsHandler returns the handler of the relay's metrics, in the
// Prometheus exposition formats: what GET /metrics serves on Handler, for a
// separate port that need not face the internet. It serves the registry of
// [Config.Registry], with whatever else was registered there.
func (r *Relay) MetricsHandler() http.Handler { return r.metricsHandler }

func newMetricsHandler(g prometheus.Gatherer, log *slog.Logger) http.Handler {
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{
		ErrorLog:      promLogger{log},
		ErrorHandling: promhttp.ContinueOnError,
		// The main port may face the internet: a flood of scrapes must not
		// pile up gathers. Prometheus itself sends one at a time.
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	})
}

// promLogger sends promhttp's errors to the relay's log.
type promLogger struct{ log *slog.Logger }

func (l promLogger) Println(v ...any) { l.log.Warn("metrics", "err", fmt.Sprint(v...)) }
