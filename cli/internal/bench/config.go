package bench

import (
	"errors"
	"fmt"
	"time"

	"github.com/sserelay/sserelay/relay/subject"
)

// Mode is how streams map to feeds: "per-user" or "broadcast".
type Mode string

const (
	modePerUser   Mode = "per-user"  // one user and feed per stream; events round-robin over them
	modeBroadcast Mode = "broadcast" // every stream reads one shared feed granted by the token
)

// Publisher is the way events enter the relay: "nats" or "http".
type Publisher string

const (
	publisherNATS Publisher = "nats" // JetStream asynchronous publish, several in flight
	publisherHTTP Publisher = "http" // POST /v1/publish, Publishers concurrent requests
)

// Source addresses: 127.0.0.1 to 127.0.0.250, one per connsPerSourceAddr
// connections unless told otherwise, which leaves room in each address's
// ephemeral port range.
const (
	maxSourceAddrs     = 250
	connsPerSourceAddr = 16384
)

// errInvalidConfig is wrapped by configuration errors.
var errInvalidConfig = errors.New("invalid bench config")

// Config describes a run. Zero values take the documented defaults.
type Config struct {
	// URL is the relay, http://host:port. Required.
	URL string
	// NATSURL is the NATS server the relay reads; required with
	// the "nats" publisher (the default).
	NATSURL string
	// Secret is the HS256 secret the relay verifies tokens with. Required.
	Secret []byte
	// App is the app id (default "bench"); SubjectPrefix the relay's
	// subject prefix (default "sse").
	App, SubjectPrefix string

	// Mode maps streams to feeds (default "per-user"). Feed is the shared
	// feed of "broadcast" (default "_all_<run id>", so that runs against one
	// relay do not see each other's events).
	Mode Mode
	Feed string
	// Streams is the number of SSE streams to open (0: none).
	Streams int
	// ConnectRate is the streams opened per second (0: as fast as
	// ConnectConcurrency allows); ConnectConcurrency bounds the connects in
	// progress (default 256); ConnectTimeout bounds one (default 30 s).
	ConnectRate        float64
	ConnectConcurrency int
	ConnectTimeout     time.Duration
	// SourceAddrs spreads the streams' connections over this many loopback
	// source addresses, 127.0.0.1 onward: the kernel gives each source
	// address its own range of ephemeral ports (about 28,000 by default), so
	// one address cannot hold 100,000 streams. 0: one per 16,384
	// connections when the relay is on 127.0.0.0/8, else the kernel's
	// choice.
	SourceAddrs int
	// Idle is the wait after connecting, before the idle RSS is read; the
	// relay's CPU over it is its cost of idle streams, keepalives included
	// (default 2 s; negative: none). A window of several keepalive intervals
	// makes that figure mean something.
	Idle time.Duration
	// ReadBuffer is each stream's read buffer in bytes (default 4096; it
	// grows for longer lines). The --resume-missed client reads with 256 KiB,
	// the storm's clients with 16 KiB.
	ReadBuffer int

	// Rate is the events published per second (0: as fast as possible),
	// during Duration, or until Events are published when Events > 0. With
	// neither there is no publish phase (an idle-memory run).
	Rate     float64
	Duration time.Duration
	Events   int
	// Publisher selects NATS or HTTP (default "nats"). Publishers is
	// the number of concurrent HTTP publishers (default 16); MaxInflight the
	// asynchronous JetStream publishes awaiting acknowledgement (default 256).
	Publisher   Publisher
	Publishers  int
	MaxInflight int
	// PayloadBytes pads each event's data to about this size (default: no
	// padding, about 40 bytes).
	PayloadBytes int
	// Settle bounds the wait for deliveries after the last acknowledgement
	// (default 10 s).
	Settle time.Duration

	// ResumeMissed > 0 adds a resume test: one client disconnects, this many
	// events are published to its feed, and it reconnects with Last-Event-ID.
	ResumeMissed int
	// ResumeStorm > 0 adds a reconnect storm: that many clients, each having
	// missed StormMissed events (default 100), reconnect at once; during the
	// main phase if there is one (a third of the way in), so that the live
	// latency of the other streams meanwhile is measured.
	ResumeStorm int
	StormMissed int
	// StormShared puts the storm's clients on one shared feed (a whole
	// pod's clients coming back after a restart: StormMissed events in all)
	// instead of a feed each (ResumeStorm × StormMissed events in all).
	StormShared bool

	// RelayPID is the relay's process id, for its RSS and CPU (0: unknown).
	RelayPID int
	// Logf receives progress lines (nil: none).
	Logf func(format string, args ...any)
}

func (c *Config) setDefaults() error {
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	if c.App == "" {
		c.App = "bench"
	}
	if c.SubjectPrefix == "" {
		c.SubjectPrefix = "sse"
	}
	if c.Mode == "" {
		c.Mode = modePerUser
	}
	if c.Publisher == "" {
		c.Publisher = publisherNATS
	}
	def(&c.ConnectConcurrency, 256)
	def(&c.ReadBuffer, 4096)
	def(&c.Publishers, 16)
	def(&c.MaxInflight, 256)
	def(&c.StormMissed, 100)
	if c.ConnectTimeout == 0 {
		c.ConnectTimeout = 30 * time.Second
	}
	if c.Idle == 0 {
		c.Idle = 2 * time.Second
	}
	if c.Settle == 0 {
		c.Settle = 10 * time.Second
	}
	if c.Logf == nil {
		c.Logf = func(string, ...any) {}
	}
	switch {
	case c.URL == "":
		return fmt.Errorf("%w: the relay URL is required", errInvalidConfig)
	case len(c.Secret) == 0:
		return fmt.Errorf("%w: the JWT secret is required", errInvalidConfig)
	case c.Mode != modePerUser && c.Mode != modeBroadcast:
		return fmt.Errorf("%w: mode %q (want per-user or broadcast)", errInvalidConfig, c.Mode)
	case c.Publisher != publisherNATS && c.Publisher != publisherHTTP:
		return fmt.Errorf("%w: publisher %q (want nats or http)", errInvalidConfig, c.Publisher)
	case c.Publisher == publisherNATS && c.NATSURL == "":
		return fmt.Errorf("%w: the NATS URL is required to publish through NATS", errInvalidConfig)
	case c.SourceAddrs < 0 || c.SourceAddrs > maxSourceAddrs:
		return fmt.Errorf("%w: source addresses %d (want 0 to %d)", errInvalidConfig, c.SourceAddrs, maxSourceAddrs)
	case c.Streams < 0 || c.Rate < 0 || c.Events < 0 || c.ResumeMissed < 0 || c.ResumeStorm < 0 || c.StormMissed < 0 || c.ReadBuffer < 512:
		return fmt.Errorf("%w: negative count or rate, or read buffer below 512 bytes", errInvalidConfig)
	case (c.Duration > 0 || c.Events > 0) && c.Streams == 0:
		return fmt.Errorf("%w: a publish phase needs streams", errInvalidConfig)
	case c.Feed != "" && !subject.ValidToken(c.Feed):
		return fmt.Errorf("%w: feed %q is not a valid subject token", errInvalidConfig, c.Feed)
	case !subject.ValidToken(c.App):
		return fmt.Errorf("%w: app %q is not a valid subject token", errInvalidConfig, c.App)
	}
	return nil
}

// echo is the scenario as the report shows it.
func (c *Config) echo() reportConfig {
	e := reportConfig{
		URL: c.URL, NATSURL: c.NATSURL, Mode: string(c.Mode), Streams: c.Streams, ConnectRate: c.ConnectRate,
		Rate: c.Rate, Duration: c.Duration.String(), Events: c.Events, Publisher: string(c.Publisher),
		SourceAddrs: c.SourceAddrs, PayloadBytes: c.PayloadBytes, ResumeMissed: c.ResumeMissed, ResumeStorm: c.ResumeStorm,
	}
	if c.Mode == modeBroadcast {
		e.Feed = c.Feed
	}
	if c.Publisher == publisherHTTP {
		e.Publishers = c.Publishers
	} else {
		e.MaxInflight = c.MaxInflight
	}
	if c.ResumeStorm > 0 {
		e.StormMissed = c.StormMissed
		e.StormShared = c.StormShared
	}
	return e
}

// connections is the most client connections the run holds at once: the
// streams, the storm's (its first connections are closed before it
// reconnects, but their sockets may linger), the resume client, the
// publishers.
func (c *Config) connections() int {
	return c.Streams + 2*c.ResumeStorm + 2 + c.Publishers
}
