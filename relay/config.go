package relay

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sserelay/sserelay/relay/auth"
	"github.com/sserelay/sserelay/relay/subject"
)

// TokenVerifier turns a bearer token into the claims of its user.
// *auth.Verifier implements it.
type TokenVerifier interface {
	Verify(token string) (*auth.Claims, error)
}

// Config configures a Relay. Zero values take the documented defaults.
type Config struct {
	// Conn is the relay's NATS connection. Required. The relay does not close it.
	Conn *nats.Conn
	// Verifier checks tokens. Required.
	Verifier TokenVerifier
	// Stream is the JetStream stream holding the events (default "SSE").
	Stream string
	// SubjectPrefix is the first subject token (default "sse").
	SubjectPrefix string
	// JetStreamDomain selects a JetStream domain (for leaf-node setups).
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
	// they bound the memory of a resume (default 1024 events, 1 MiB). Larger
	// batches are faster: the server counts the pending messages once per
	// batch (1024 replays 100k events about twice as fast as 256).
	ReplayBatch int
	ReplayBytes int
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
	// RequestTimeout bounds each store read during a resume (default 5 s).
	RequestTimeout time.Duration
	// AllowedOrigins lists the origins allowed by CORS; "*" allows any.
	// Empty: no CORS headers (same-origin only).
	AllowedOrigins []string
	// TokenCache is the number of verified tokens remembered until they
	// expire (at most a minute), so that repeated requests with one token
	// skip the signature check (default 10000; -1 turns it off).
	TokenCache int
	// NoDemo disables the demo page at "/".
	NoDemo bool
	// NoHijack keeps HTTP/1.1 streams inside net/http instead of taking
	// their connections over (which saves about 10 KiB and a goroutine per
	// idle stream). Set it when a middleware must see the whole response.
	NoHijack bool
}

// ErrInvalidConfig is wrapped by configuration errors.
var ErrInvalidConfig = errors.New("invalid relay config")

func (c *Config) setDefaults() error {
	if c.Conn == nil {
		return fmt.Errorf("%w: a NATS connection is required", ErrInvalidConfig)
	}
	if c.Verifier == nil {
		return fmt.Errorf("%w: a token verifier is required", ErrInvalidConfig)
	}
	setDefault(&c.Stream, "SSE")
	setDefault(&c.SubjectPrefix, "sse")
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	setDefault(&c.Keepalive, 15*time.Second)
	setDefault(&c.Retry, 2*time.Second)
	setDefault(&c.WriteTimeout, 10*time.Second)
	setDefault(&c.QueueEvents, 4096)
	setDefault(&c.QueueBytes, 4<<20)
	setDefault(&c.ReplayBatch, 1024)
	setDefault(&c.ReplayBytes, 1<<20)
	setDefault(&c.MaxReplays, 32)
	setDefault(&c.RingEvents, 262144)
	setDefault(&c.RingBytes, 64<<20)
	setDefault(&c.TokenCache, 10000)
	setDefault(&c.MaxFeeds, 16)
	setDefault(&c.MaxTopics, 16)
	setDefault(&c.PollPage, 500)
	setDefault(&c.MaxPublishBytes, 64<<10)
	setDefault(&c.PublishTimeout, 5*time.Second)
	setDefault(&c.RequestTimeout, 5*time.Second)
	if !subject.ValidTopic(c.SubjectPrefix) {
		return fmt.Errorf("%w: subject prefix %q", ErrInvalidConfig, c.SubjectPrefix)
	}
	if c.ReplayBatch < 1 || c.MaxReplays < 1 || c.QueueEvents < 1 || c.QueueBytes < 1 {
		return fmt.Errorf("%w: replay batch, max replays and queue limits must be positive", ErrInvalidConfig)
	}
	return nil
}

func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}
