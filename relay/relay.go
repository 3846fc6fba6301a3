// Package relay serves events stored in a NATS JetStream stream to HTTP
// clients as Server-Sent Events, with exact resume by Last-Event-ID.
//
// One Relay runs one consumer on the whole stream and a registry of
// the open sessions of this process, keyed by "<app>.<feed>". The consumer's
// handler is the dispatcher: it advances a cursor (the last sequence
// dispatched) under the registry lock and appends each event to the queues of
// the sessions that want it. A session that resumes from id E registers under
// the same lock and takes C = cursor: it reads (E, C] from the store and
// everything after C from its queue, so every event above E arrives exactly
// once, in order.
package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sserelay/sserelay/relay/auth"
)

// Relay is an SSE relay for one JetStream stream. Create it with New, start
// its consumer with Start, serve Handler, and stop it with Shutdown.
type Relay struct {
	cfg     Config
	log     *slog.Logger
	js      jetstream.JetStream
	pub     jetstream.JetStream // POST /v1/publish's: asynchronous, bounded window
	apiPfx  string              // "$JS.API." or "$JS.<domain>.API."
	metrics *metrics
	// metricsHandler serves cfg.Registry.
	metricsHandler http.Handler

	hub        *hub        // the registry of open sessions, and the dispatcher's cursor
	keepalives *keepalives // of every stream, from one goroutine
	poller     *poller     // notices the clients of parked sessions leaving

	replaySlots chan struct{}
	// replayConsumers holds a token per short-lived replay consumer in use
	// (Config.ReplayConsumers; nil: none).
	replayConsumers chan struct{}
	limits          *limiters
	openConns       atomic.Int64 // connections open on the relay's Listeners

	started   atomic.Bool
	draining  atomic.Bool
	aborted   atomic.Bool   // Shutdown closed the connections of the streams still open
	drainCh   chan struct{} // closed when draining starts
	drainOnce sync.Once
	consumer  atomic.Pointer[liveConsumer] // set by Start

	exclusionLog logEvery // warnings about ignored X-Connection-Id headers
}

// logEvery lets one log line through per interval, for conditions that a
// publisher can repeat on every event: the metric counts them all.
type logEvery struct{ next atomic.Int64 }

const logInterval = time.Minute

func (l *logEvery) allow(now time.Time) bool {
	n := l.next.Load()
	return now.UnixNano() >= n && l.next.CompareAndSwap(n, now.Add(logInterval).UnixNano())
}

// New checks cfg and returns a Relay. It does not touch NATS yet.
func New(cfg Config) (*Relay, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	cfg.Verifier = auth.NewCache(cfg.Verifier, cfg.TokenCache)
	if cfg.Registry == nil {
		cfg.Registry = prometheus.NewRegistry()
	}
	m := newMetrics()
	// Its own context, so that the window and the acknowledgement timeout
	// are the relay's whatever options cfg.JetStream was made with.
	pub, err := jetstream.New(cfg.Conn, jetstream.WithPublishAsyncMaxPending(cfg.PublishWindow),
		jetstream.WithPublishAsyncTimeout(cfg.PublishTimeout))
	if err != nil {
		return nil, fmt.Errorf("relay: jetstream: %w", err)
	}
	r := &Relay{
		cfg:            cfg,
		log:            cfg.Logger,
		js:             cfg.JetStream,
		pub:            pub,
		apiPfx:         apiPrefix(cfg.JetStream),
		metrics:        m,
		metricsHandler: newMetricsHandler(cfg.Registry, cfg.Logger),
		hub:            newHub(&cfg, m),
		keepalives:     newKeepalives(cfg.Keepalive),
		poller:         newPoller(cfg.Logger),
		replaySlots:    make(chan struct{}, cfg.MaxReplays),
		limits:         newLimiters(&cfg),
		drainCh:        make(chan struct{}),
	}
	if cfg.ReplayConsumers > 0 {
		r.replayConsumers = make(chan struct{}, cfg.ReplayConsumers)
	}
	if err := m.register(cfg.Registry, r); err != nil {
		return nil, err
	}
	return r, nil
}

// Start checks the stream and starts the dispatcher: a consumer on the
// whole stream, from just after its last sequence. The consumer is replaced
// whenever it stops delivering (see liveConsumer) until Shutdown.
func (r *Relay) Start(ctx context.Context) error {
	if !r.started.CompareAndSwap(false, true) {
		return errors.New("relay: already started")
	}
	s, err := r.lookupStream(ctx)
	if err != nil {
		return fmt.Errorf("relay: stream %s: %w", r.cfg.Stream, err)
	}
	info := s.CachedInfo()
	if !info.Config.AllowDirect {
		return fmt.Errorf("relay: stream %s must allow direct get (allow_direct): resumes read the store with it", r.cfg.Stream)
	}
	r.hub.setCursor(info.State.LastSeq)
	c := newLiveConsumer(s, r.cfg.Conn, r.cfg.SubjectPrefix+".>", r.log,
		r.dispatch, func() uint64 { return r.hub.cursorNow() + 1 },
		r.metrics.consumerReplaced)
	if err := c.start(ctx); err != nil {
		return fmt.Errorf("relay: %w", err)
	}
	r.consumer.Store(c)
	r.log.Info("relay started", "stream", r.cfg.Stream, "cursor", info.State.LastSeq, "first_seq", info.State.FirstSeq)
	return nil
}

// lookupStream looks the stream up, retrying until ctx ends: without a
// meta leader (a cluster electing one) nobody answers, and one request that
// waited for all of ctx would leave no time for the consumer. A stream that
// does not exist is an answer, and final.
func (r *Relay) lookupStream(ctx context.Context) (jetstream.Stream, error) {
	var b backoff
	for attempt := 1; ; attempt++ {
		tctx, cancel := context.WithTimeout(ctx, consumerCreateTimeout)
		s, err := r.js.Stream(tctx, r.cfg.Stream)
		cancel()
		if err == nil || errors.Is(err, jetstream.ErrStreamNotFound) {
			return s, err
		}
		if attempt%10 == 1 {
			r.log.Warn("looking up the stream", "stream", r.cfg.Stream, "attempt", attempt, "err", err)
		}
		if !b.sleep(ctx) {
			return nil, fmt.Errorf("%w (after %d attempts: %w)", err, attempt, context.Cause(ctx))
		}
	}
}

// Ready reports whether the relay can serve: NATS connected, a consumer
// delivering (not being replaced), not draining.
func (r *Relay) Ready() error {
	switch {
	case r.draining.Load():
		return errors.New("draining")
	case !r.consumer.Load().delivering():
		return errors.New("no stream consumer delivering")
	case !r.cfg.Conn.IsConnected():
		return errors.New("NATS not connected")
	}
	return nil
}

// ConsumerName returns the name of the JetStream consumer the relay reads
// the stream with now ("" before Start); it changes when the consumer is
// replaced.
func (r *Relay) ConsumerName() string {
	return r.consumer.Load().currentName()
}

// Drain starts draining: readiness fails, new streams are asked to retry
// later, and open streams get a retry hint and are closed so that their
// clients resume on another instance. It returns at once.
func (r *Relay) Drain() {
	r.drainOnce.Do(func() {
		r.draining.Store(true)
		close(r.drainCh)
		r.hub.drain()
		r.log.Info("draining", "open_streams", r.hub.openStreams())
	})
}

// WaitDrained drains and waits for the open streams to close, or for ctx
// to end (then it says how many are still open). The relay keeps serving
// meanwhile: a server that stops listening only after it returns lets new
// streams get their retry hint and readiness its answer while streams
// close.
func (r *Relay) WaitDrained(ctx context.Context) error {
	r.Drain()
	select {
	case <-r.hub.drainedCh():
		return nil
	case <-ctx.Done():
		return fmt.Errorf("relay: %d streams still open: %w", r.hub.openStreams(), ctx.Err())
	}
}

// Shutdown drains, waits for the open streams to close (or ctx to end), and
// stops the consumer. When ctx ends first, the connections of the streams
// still open (a client that stopped reading holds its writer until the write
// deadline) are closed so that their goroutines end. It does not close the
// NATS connection; publishes still waiting for their acknowledgement fail.
func (r *Relay) Shutdown(ctx context.Context) error {
	err := r.WaitDrained(ctx)
	if err != nil {
		done := r.hub.drainedCh()
		r.aborted.Store(true)
		r.hub.abortAll()
		select {
		case <-done:
		case <-time.After(time.Second): // only streams inside net/http (HTTP/2) can still be open
		}
	}
	// With every stream gone the keepalives' goroutine has ended or is
	// ending: it is the relay's, so Shutdown returns after it.
	r.keepalives.wait()
	r.consumer.Load().close()
	// The async publisher's reply subscription and its goroutine live as
	// long as the connection otherwise, and the connection is not ours.
	r.pub.CleanupPublisher()
	return err
}

// Cursor returns the last stream sequence this relay has dispatched.
func (r *Relay) Cursor() uint64 {
	return r.hub.cursorNow()
}

// OpenStreams returns the number of open SSE streams.
func (r *Relay) OpenStreams() int { return int(r.hub.openStreams()) }

// Handler returns the HTTP handler with every endpoint of the relay.
func (r *Relay) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/events", r.serveEvents)
	mux.HandleFunc("POST /v1/publish", r.servePublish)
	mux.HandleFunc("GET /healthz", serveHealthz)
	mux.HandleFunc("GET /readyz", r.serveReadyz)
	if !r.cfg.NoMetrics {
		mux.Handle("GET /metrics", r.metricsHandler)
	}
	webRoutes(mux, !r.cfg.NoDemo)
	mux.HandleFunc("/", func(w http.ResponseWriter, req *http.Request) {
		// The catch-all matches every method, so the mux never answers 405
		// itself: a path that another method serves gets it here, and
		// OPTIONS on such a path its methods (RFC 9110 9.3.7).
		if allow := allowedMethods(mux, req); allow != "" {
			w.Header().Set("Allow", allow)
			if req.Method == http.MethodOptions {
				w.WriteHeader(http.StatusNoContent)
				return
			}
			writeError(w, http.StatusMethodNotAllowed, "method "+req.Method+" not allowed: "+allow)
			return
		}
		writeError(w, http.StatusNotFound, "not found")
	})
	return r.limitBody(r.cors(mux))
}

// allowedMethods returns the methods that mux serves req's path with,
// other than through the catch-all "/", and OPTIONS, which the catch-all
// answers for every such path: "GET, HEAD, OPTIONS". It is "" for a path
// that nothing serves.
func allowedMethods(mux *http.ServeMux, req *http.Request) string {
	var allow []string
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodPost} {
		probe := &http.Request{Method: m, URL: req.URL, Host: req.Host, Header: http.Header{}}
		if _, pattern := mux.Handler(probe); pattern != "/" && pattern != "" {
			allow = append(allow, m)
		}
	}
	if len(allow) == 0 {
		return ""
	}
	return strings.Join(append(allow, http.MethodOptions), ", ")
}

// retryHint returns the reconnection delay for a client that is sent away:
// the configured delay plus up to as much again, so that the clients of a
// drained instance do not all come back in the same millisecond.
func (r *Relay) retryHint() int64 {
	base := r.cfg.Retry.Milliseconds()
	return base + rand.Int64N(base+1)
}

// dispatch is the consumer's message handler. The consumer calls it
// serially, in stream order, exactly once per stored event.
func (r *Relay) dispatch(msg jetstream.Msg, meta *jetstream.MsgMetadata) {
	hdr := msg.Headers()
	seq := meta.Sequence.Stream
	if undecodableHeader(msg) {
		r.hub.dropUndecodable(seq, msg.Subject())
		r.metrics.consumed(meta)
		return
	}
	connID, connUser := hdr.Get(HeaderConnectionID), hdr.Get(HeaderConnectionUser)
	if eff := exclusionID(connID, connUser, r.cfg.ExclusionWithoutUser); eff != connID {
		r.metrics.exclusionsIgnored.Add(1)
		if r.exclusionLog.allow(time.Now()) {
			r.log.Warn("X-Connection-Id without X-Connection-User excludes no one: set both (or --exclusion-without-user)",
				"subject", msg.Subject(), "seq", seq, "connection_id", connID)
		}
		connID = eff
	}
	r.hub.deliver(seq, msg.Subject(), hdr.Get(HeaderEvent), connID, connUser, msg.Data())
	r.metrics.consumed(meta)
}
