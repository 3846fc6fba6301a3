package relay

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/sserelay/sserelay/relay/auth"
	"github.com/sserelay/sserelay/relay/subject"
)

// TokenVerifier turns a bearer token into the claims of its user.
// *auth.Verifier implements it.
type TokenVerifier interface {
	Verify(token string) (*auth.Claims, error)
}

// Config configures a Relay. Zero values take the documented defaults,
// which DefaultConfig returns.
type Config struct {
	// JetStream is the JetStream context the relay uses: its connection,
	// API prefix or domain included. Either it or Conn is required.
	JetStream jetstream.JetStream
	// Conn is the relay's NATS connection; with JetStream set it must be
	// JetStream's (or nil). The relay does not close it.
	Conn *nats.Conn
	// Verifier checks tokens. Required.
	Verifier TokenVerifier
	// TokenLeeway is the clock skew the Verifier allows on exp and nbf: a
	// stream ends TokenLeeway after its token's exp, as the Verifier would
	// refuse it only then (0: at exp). Otherwise a token accepted within
	// the leeway would be told at once that it expired, and reconnect in
	// a loop.
	TokenLeeway time.Duration
	// Stream is the JetStream stream holding the events (default "SSE").
	Stream string
	// SubjectPrefix is the first subject token (default "sse").
	SubjectPrefix string
	// JetStreamDomain selects a JetStream domain (for leaf-node setups) when
	// JetStream is not given; otherwise it must be empty or JetStream's.
	JetStreamDomain string
	// Logger receives the relay's logs (default slog.Default()).
	Logger *slog.Logger

	// Keepalive is the interval of comment lines on an idle stream (default
	// 15 s, below the 60 s idle cut of nginx and ALBs).
	Keepalive time.Duration
	// Retry is the reconnection delay hinted to clients (default 2 s).
	// Drain and load-shedding hints add up to the same again as jitter.
	Retry time.Duration
	// WriteTimeout is the deadline of each write to a client; a client that
	// reads nothing for that long is closed (default 10 s).
	WriteTimeout time.Duration
	// QueueEvents and QueueBytes bound the events waiting for one client
	// (default 4096 events, 4 MiB). On overflow the queue is dropped and the
	// client catches up from the store: no loss, bounded memory.
	QueueEvents int
	QueueBytes  int
	// ReplayBatch and ReplayBytes bound the events read from the store per
	// request during a resume; with the number of subjects of the session
	// they bound the memory of a resume, two batches per subject: the next
	// one is read while the current one is written (default 4096 events,
	// 1 MiB). Larger batches are cheaper: the server counts the pending
	// messages once per batch (4096 takes a fifth less CPU per event than
	// 1024 in BenchmarkResume100k/store).
	ReplayBatch int
	ReplayBytes int
	// ReplayConsumerMin: a catch-up whose first Direct Get batch of a
	// subject leaves more than this many of its events in the store reads
	// them through a short-lived JetStream consumer instead, about 40% less
	// CPU per event (default 4096; -1: never).
	ReplayConsumerMin int
	// ReplayConsumers bounds the short-lived consumers this relay holds at
	// once (default 8; -1: none); a catch-up that finds them all taken reads
	// with Direct Get. They count against the stream's consumer limit
	// (1,000 by default since nats-server 2.15), shared by every relay on
	// the stream and by their live consumers: a relay that cannot create its
	// live consumer delivers nothing. 8 are enough to keep both cores busy
	// with catch-ups.
	ReplayConsumers int
	// RingEvents and RingBytes bound the recent events kept in memory to
	// serve resumes without reading the store (default 262144 events,
	// 64 MiB; RingEvents -1 turns it off). It grows with use.
	RingEvents int
	RingBytes  int
	// MaxReplays bounds resumes that read the store at once, so that a
	// reconnect storm cannot starve live delivery (default 32). Sessions wait
	// for a slot; live events queue for them meanwhile.
	MaxReplays int
	// MaxStreams bounds open streams; beyond it a client is asked to retry
	// later (default 0: no limit).
	MaxStreams int
	// MaxFeeds and MaxTopics bound the feeds and topics of one stream
	// (default 16 each).
	MaxFeeds, MaxTopics int
	// PollPage is the most events one poll=1 request returns (default 500).
	PollPage int
	// MaxPublishBytes bounds a POST /v1/publish body (default 64 KiB).
	MaxPublishBytes int64
	// PublishTimeout bounds the wait for JetStream's acknowledgement (default 5 s).
	PublishTimeout time.Duration
	// PublishWindow bounds the POST /v1/publish events awaiting JetStream's
	// acknowledgement at once (default 4096); a publish beyond it waits up
	// to 200 ms for room, then gets a 503.
	PublishWindow int
	// RequestTimeout bounds each store read during a resume (default 5 s).
	RequestTimeout time.Duration
	// AllowedOrigins lists the origins allowed by CORS; "*" allows any.
	// Empty: no CORS headers (same-origin only).
	AllowedOrigins []string
	// TokenCache is the number of verified tokens remembered until they
	// expire (at most a minute), so that repeated requests with one token
	// skip the signature check (default 10000; -1 turns it off).
	TokenCache int
	// TrustedProxies lists the CIDR prefixes (or single addresses) of the
	// proxies in front of the relay: for a request from one of them the
	// client's address is the right-most address of X-Forwarded-For that is
	// not a trusted proxy. Empty: the peer address is the client's.
	TrustedProxies []string

	// BodyTimeout bounds the time to receive the body of a request that has
	// one (every endpoint but a stream reads it before it answers), so that
	// a client that announces a body and sends nothing holds no connection
	// (default 10 s).
	BodyTimeout time.Duration
	// MaxConnections bounds the open connections of a listener wrapped by
	// [Relay.Listener]; beyond it new connections are closed at once
	// (default 0: the open-files limit less 256 for NATS, the store and
	// the logs; -1: no bound).
	MaxConnections int
	// PollPageBytes bounds the event data of one poll=1 response (default
	// 1 MiB); a page holds at least one event whatever its size.
	PollPageBytes int

	// MaxStreamsPerUser bounds the open streams of one user (token subject);
	// beyond it the user's new streams are asked to retry later (default
	// 64; -1: no bound).
	MaxStreamsPerUser int
	// UserStreamRate and UserStreamBurst bound the new streams (and polls)
	// per second of one user: a token bucket of UserStreamBurst refilled at
	// UserStreamRate per second (default 2/s, burst 20: a user's tabs all
	// reconnecting after a drain fit; -1 rate: no bound).
	UserStreamRate  float64
	UserStreamBurst int
	// IPStreamRate and IPStreamBurst do the same per client address (an
	// IPv6 address counts by its /64), before the token is checked
	// (default 100/s, burst 1000: generous, since an office behind one NAT,
	// or a proxy that is not in TrustedProxies, is one address; -1: no bound).
	IPStreamRate  float64
	IPStreamBurst int
	// PublishRate and PublishBurst bound the POST /v1/publish requests per
	// second of one token subject; beyond it the answer is 429 with
	// Retry-After (default 100/s, burst 200; -1 rate: no bound). Backends
	// that publish more publish to NATS directly.
	PublishRate  float64
	PublishBurst int
	// MaxReplaysPerUser bounds the replay slots (of MaxReplays) one user
	// holds at once; the user's other catch-ups and polls wait for one of
	// theirs, without holding a slot another user could take (default 4).
	MaxReplaysPerUser int
	// LimiterKeys bounds the users and addresses the rate limits remember
	// each (default 100000); idle ones are forgotten first.
	LimiterKeys int

	// NoDemo disables the demo page at "/".
	NoDemo bool
	// Registry receives the relay's metrics; GET /metrics and
	// [Relay.MetricsHandler] serve it, with whatever else is registered there
	// (the CLI adds the Go runtime and process collectors). nil: a registry
	// of the relay's own. One registry holds the metrics of one relay.
	Registry *prometheus.Registry
	// NoMetrics leaves GET /metrics out of Handler, for a relay whose
	// metrics are served on a private port with MetricsHandler.
	NoMetrics bool
	// ExclusionWithoutUser lets an X-Connection-Id without an
	// X-Connection-User header exclude the streams with that id of any user.
	// Off (the default), such an id excludes no one (counted in
	// sserelay_exclusions_ignored_total): a backend that copies only the
	// id from its client's request would let a user who learns another
	// user's connection id suppress that user's events on a shared feed.
	// Turn it on only for raw NATS publishers that cannot say the user.
	ExclusionWithoutUser bool
	// NoHijack keeps HTTP/1.1 streams inside net/http instead of taking
	// their connections over (which saves about 10 KiB and a goroutine per
	// idle stream). Set it when a middleware must see the whole response.
	NoHijack bool
}

// ErrInvalidConfig is wrapped by configuration errors.
var ErrInvalidConfig = errors.New("invalid relay config")

// DefaultConfig returns the defaults of every option: what a zero field of
// a Config passed to New becomes. (Logger's default is slog.Default(), taken
// when New runs.)
func DefaultConfig() Config {
	return Config{
		Stream:          "SSE",
		SubjectPrefix:   "sse",
		Keepalive:       15 * time.Second,
		Retry:           2 * time.Second,
		WriteTimeout:    10 * time.Second,
		QueueEvents:     4096,
		QueueBytes:      4 << 20,
		ReplayBatch:     4096,
		ReplayBytes:     1 << 20,
		RingEvents:      262144,
		RingBytes:       64 << 20,
		MaxReplays:      32,
		MaxFeeds:        16,
		MaxTopics:       16,
		PollPage:        500,
		MaxPublishBytes: 64 << 10,
		PublishTimeout:  5 * time.Second,
		PublishWindow:   4096,
		RequestTimeout:  5 * time.Second,
		TokenCache:      10000,
		BodyTimeout:     10 * time.Second,
		PollPageBytes:   1 << 20,

		ReplayConsumerMin: 4096,
		ReplayConsumers:   8,
		MaxStreamsPerUser: 64,
		UserStreamRate:    2,
		UserStreamBurst:   20,
		IPStreamRate:      100,
		IPStreamBurst:     1000,
		PublishRate:       100,
		PublishBurst:      200,
		MaxReplaysPerUser: 4,
		LimiterKeys:       100000,
	}
}

// DefaultStreamOptions returns the defaults of StreamOptions: what a zero
// field passed to EnsureStream becomes.
func DefaultStreamOptions() StreamOptions {
	return StreamOptions{
		Name:          "SSE",
		SubjectPrefix: "sse",
		MaxAge:        24 * time.Hour,
		MaxBytes:      1 << 30,
		MaxMsgs:       -1,
		Duplicates:    2 * time.Minute,
		Replicas:      1,
	}
}

func (o *StreamOptions) setDefaults() error {
	d := DefaultStreamOptions()
	setDefault(&o.Name, d.Name)
	setDefault(&o.SubjectPrefix, d.SubjectPrefix)
	setDefault(&o.MaxAge, d.MaxAge)
	setDefault(&o.MaxBytes, d.MaxBytes)
	setDefault(&o.MaxMsgs, d.MaxMsgs)
	setDefault(&o.Duplicates, d.Duplicates)
	setDefault(&o.Replicas, d.Replicas)
	return o.check()
}

// Validate reports the first option of o that EnsureStream would refuse,
// as a *ConfigError. Zero fields are valid: they take the defaults.
func (o StreamOptions) Validate() error { return o.setDefaults() }

// MaxReplicas is the most replicas JetStream gives a stream.
const MaxReplicas = 5

func (o *StreamOptions) check() error {
	switch {
	case !validStreamName(o.Name):
		return invalid("Name", o.Name, "a stream name cannot contain whitespace, '.', '*', '>', '/' or '\\'")
	case !subject.ValidTopic(o.SubjectPrefix):
		return invalid("SubjectPrefix", o.SubjectPrefix, "want NATS tokens joined by '.', without wildcards or whitespace")
	case o.MaxAge < 0:
		return invalid("MaxAge", o.MaxAge, "must not be negative")
	case o.MaxBytes < -1:
		return invalid("MaxBytes", o.MaxBytes, "want a positive size, or -1 for no limit")
	case o.MaxMsgs < -1:
		return invalid("MaxMsgs", o.MaxMsgs, "want a positive count, or -1 for no limit")
	case o.Duplicates < 0:
		return invalid("Duplicates", o.Duplicates, "must not be negative")
	case o.Replicas < 1 || o.Replicas > MaxReplicas:
		return invalid("Replicas", o.Replicas, fmt.Sprintf("want 1 to %d", MaxReplicas))
	}
	return nil
}

// Bounds of the durations of Config, against typos of units: below
// MinTimeout a keepalive would flood every stream and a write or request
// deadline would fail them all; a Retry above MaxRetry keeps clients away for
// hours.
const (
	MinTimeout = 10 * time.Millisecond
	MaxRetry   = time.Hour
)

// A ConfigError reports an option of Config or StreamOptions that means
// nothing (negative, below a floor, absurd). It wraps ErrInvalidConfig.
type ConfigError struct {
	Field  string // the field's name, e.g. "Keepalive"
	Value  any    // its value
	Reason string
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("%s: %s %v: %s", ErrInvalidConfig, e.Field, e.Value, e.Reason)
}

// Unwrap returns ErrInvalidConfig.
func (e *ConfigError) Unwrap() error { return ErrInvalidConfig }

func invalid(field string, value any, reason string) *ConfigError {
	return &ConfigError{Field: field, Value: value, Reason: reason}
}

func (c *Config) setDefaults() error {
	if err := c.setJetStream(); err != nil {
		return err
	}
	if c.Verifier == nil {
		return fmt.Errorf("%w: a token verifier is required", ErrInvalidConfig)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	c.setValueDefaults()
	return c.check()
}

// Validate reports the first option of c that New would refuse, as a
// *ConfigError; it needs no connection or verifier (New checks those).
// Zero fields are valid: they take the defaults.
func (c Config) Validate() error {
	c.setValueDefaults()
	return c.check()
}

func (c *Config) setValueDefaults() {
	d := DefaultConfig()
	setDefault(&c.Stream, d.Stream)
	setDefault(&c.SubjectPrefix, d.SubjectPrefix)
	setDefault(&c.Keepalive, d.Keepalive)
	setDefault(&c.Retry, d.Retry)
	setDefault(&c.WriteTimeout, d.WriteTimeout)
	setDefault(&c.QueueEvents, d.QueueEvents)
	setDefault(&c.QueueBytes, d.QueueBytes)
	setDefault(&c.ReplayBatch, d.ReplayBatch)
	setDefault(&c.ReplayBytes, d.ReplayBytes)
	setDefault(&c.ReplayConsumerMin, d.ReplayConsumerMin)
	setDefault(&c.ReplayConsumers, d.ReplayConsumers)
	setDefault(&c.MaxReplays, d.MaxReplays)
	setDefault(&c.RingEvents, d.RingEvents)
	setDefault(&c.RingBytes, d.RingBytes)
	setDefault(&c.TokenCache, d.TokenCache)
	setDefault(&c.MaxFeeds, d.MaxFeeds)
	setDefault(&c.MaxTopics, d.MaxTopics)
	setDefault(&c.PollPage, d.PollPage)
	setDefault(&c.MaxPublishBytes, d.MaxPublishBytes)
	setDefault(&c.PublishTimeout, d.PublishTimeout)
	setDefault(&c.PublishWindow, d.PublishWindow)
	setDefault(&c.RequestTimeout, d.RequestTimeout)
	c.setLimitDefaults(d)
}

// check checks c after defaults: what is left at zero or below means
// nothing (but the documented -1 switches).
func (c *Config) check() error {
	const positive = "must be positive"
	timeout := fmt.Sprintf("want at least %v", MinTimeout)
	switch {
	case !validStreamName(c.Stream):
		return invalid("Stream", c.Stream, "a stream name cannot contain whitespace, '.', '*', '>', '/' or '\\'")
	case !subject.ValidTopic(c.SubjectPrefix):
		return invalid("SubjectPrefix", c.SubjectPrefix, "want NATS tokens joined by '.', without wildcards or whitespace")
	case c.JetStreamDomain != "" && !subject.ValidToken(c.JetStreamDomain):
		return invalid("JetStreamDomain", c.JetStreamDomain, "want one NATS token")
	case c.Keepalive < MinTimeout:
		return invalid("Keepalive", c.Keepalive, timeout)
	case c.Retry < 0 || c.Retry > MaxRetry:
		return invalid("Retry", c.Retry, fmt.Sprintf("want a positive duration up to %v", MaxRetry))
	case c.WriteTimeout < MinTimeout:
		return invalid("WriteTimeout", c.WriteTimeout, timeout)
	case c.QueueEvents < 1:
		return invalid("QueueEvents", c.QueueEvents, positive)
	case c.QueueBytes < 1:
		return invalid("QueueBytes", c.QueueBytes, positive)
	case c.ReplayBatch < 1:
		return invalid("ReplayBatch", c.ReplayBatch, positive)
	case c.ReplayBytes < 1:
		return invalid("ReplayBytes", c.ReplayBytes, positive)
	case c.ReplayConsumerMin < -1:
		return invalid("ReplayConsumerMin", c.ReplayConsumerMin, "want a positive count, or -1 for never")
	case c.ReplayConsumers < -1:
		return invalid("ReplayConsumers", c.ReplayConsumers, "want a positive count, or -1 for none")
	case c.RingEvents < -1:
		return invalid("RingEvents", c.RingEvents, "want a positive count, or -1 for no ring")
	case c.RingBytes < 1:
		return invalid("RingBytes", c.RingBytes, positive)
	case c.MaxReplays < 1:
		return invalid("MaxReplays", c.MaxReplays, positive)
	case c.MaxStreams < 0:
		return invalid("MaxStreams", c.MaxStreams, "want a positive count, or 0 for no limit")
	case c.MaxFeeds < 1:
		return invalid("MaxFeeds", c.MaxFeeds, positive)
	case c.MaxTopics < 1:
		return invalid("MaxTopics", c.MaxTopics, positive)
	case c.PollPage < 1:
		return invalid("PollPage", c.PollPage, positive)
	case c.MaxPublishBytes < 1:
		return invalid("MaxPublishBytes", c.MaxPublishBytes, positive)
	case c.PublishTimeout < MinTimeout:
		return invalid("PublishTimeout", c.PublishTimeout, timeout)
	case c.PublishWindow < 1:
		return invalid("PublishWindow", c.PublishWindow, positive)
	case c.RequestTimeout < MinTimeout:
		return invalid("RequestTimeout", c.RequestTimeout, timeout)
	case c.TokenLeeway < 0:
		return invalid("TokenLeeway", c.TokenLeeway, "must not be negative")
	case c.TokenCache < -1:
		return invalid("TokenCache", c.TokenCache, "want a positive count, or -1 for no cache")
	}
	if err := c.checkLimits(); err != nil {
		return err
	}
	for _, o := range c.AllowedOrigins {
		if err := checkOrigin(o); err != "" {
			return invalid("AllowedOrigins", o, err)
		}
	}
	return nil
}

// checkOrigin returns what is wrong with a CORS origin, "" if nothing: it
// is "*" or scheme://host[:port], as browsers send it in Origin.
func checkOrigin(o string) string {
	if o == "*" {
		return ""
	}
	u, err := url.Parse(o)
	switch {
	case err != nil:
		return err.Error()
	case u.Scheme != "http" && u.Scheme != "https":
		return "want * or http(s)://host[:port]"
	case u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "":
		return "an origin is scheme://host[:port], without path, query or user"
	}
	return ""
}

// validStreamName reports whether JetStream accepts s as a stream name.
func validStreamName(s string) bool {
	return s != "" && len(s) <= 255 && !strings.ContainsAny(s, " \t\r\n.*>/\\") &&
		strings.IndexFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) < 0
}

// setJetStream makes JetStream and Conn agree: a JetStream context built
// from Conn and JetStreamDomain when none is given, or Conn taken from it.
func (c *Config) setJetStream() error {
	if c.JetStream == nil {
		if c.Conn == nil {
			return fmt.Errorf("%w: a NATS connection or JetStream context is required", ErrInvalidConfig)
		}
		var err error
		if c.JetStreamDomain != "" {
			c.JetStream, err = jetstream.NewWithDomain(c.Conn, c.JetStreamDomain)
		} else {
			c.JetStream, err = jetstream.New(c.Conn)
		}
		if err != nil {
			return fmt.Errorf("%w: jetstream: %w", ErrInvalidConfig, err)
		}
		return nil
	}
	if c.Conn == nil {
		c.Conn = c.JetStream.Conn()
	}
	if c.Conn != c.JetStream.Conn() {
		return fmt.Errorf("%w: Conn is not the JetStream context's connection", ErrInvalidConfig)
	}
	if d := c.JetStream.Options().Domain; c.JetStreamDomain != "" && c.JetStreamDomain != d {
		return fmt.Errorf("%w: JetStreamDomain %q, but the JetStream context's domain is %q", ErrInvalidConfig, c.JetStreamDomain, d)
	}
	c.JetStreamDomain = c.JetStream.Options().Domain
	return nil
}

// apiPrefix returns the subject prefix of js's API requests, for the
// requests nats.go has no call for (batch Direct Get), the way nats.go
// derives it: the domain's prefix, else the custom prefix, else $JS.API.
func apiPrefix(js jetstream.JetStream) string {
	o := js.Options()
	switch {
	case o.Domain != "":
		return "$JS." + o.Domain + ".API."
	case o.APIPrefix != "":
		return strings.TrimSuffix(o.APIPrefix, ".") + "."
	default:
		return jetstream.DefaultAPIPrefix
	}
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}
