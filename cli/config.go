package cli

import (
	"strings"
	"time"

	"github.com/sserelay/sserelay/relay"
)

// serveConfig is everything `sserelay serve` is configured with. The flags
// are bound to its fields, so their defaults are the values it starts with
// (newServeConfig), most of them relay.DefaultConfig's.
type serveConfig struct {
	Relay  relay.Config        // Conn, JetStream, Verifier and Logger are set by serve
	Stream relay.StreamOptions // Name and SubjectPrefix come from Relay
	// EpochIDs starts a newly created stream at relay.EpochSeq.
	EpochIDs bool

	NATS     natsConfig
	Embedded embeddedConfig
	Leaf     leafConfig
	HTTP     httpConfig
	Tokens   tokenConfig
	Log      logConfig

	// DrainTimeout bounds the shutdown after SIGTERM.
	DrainTimeout time.Duration
	// StartTimeout bounds the wait at start-up for the stream and the
	// relay's first consumer (a cluster electing its leaders).
	StartTimeout time.Duration
	// Metrics is the private port of /metrics and pprof.
	Metrics metricsConfig
}

// embeddedConfig is the embedded server's, when NATS.URL is empty.
type embeddedConfig struct {
	DataDir    string
	Listen     string // "off": no listener
	ServerName string
	StoreSync  string // a duration or "always"
}

// storeSync reads StoreSync: always (fsync before every acknowledgement),
// or the interval of a positive duration.
func (ec embeddedConfig) storeSync() (always bool, interval time.Duration, ok bool) {
	if ec.StoreSync == "always" {
		return true, 0, true
	}
	d, err := time.ParseDuration(ec.StoreSync)
	return false, d, err == nil && d > 0
}

type httpConfig struct {
	Listen            string
	ReadHeaderTimeout time.Duration
	MaxHeaderBytes    int
	CORSOrigins       string // comma-separated
	TrustedProxies    string // comma-separated CIDR prefixes
	H2C               bool
	TLSCert, TLSKey   string // HTTPS with HTTP/2 when set
}

// tokenConfig is auth.Config as flags give it (a string secret).
type tokenConfig struct {
	Secret, PublicKeyFile, JWKSURL string
	Issuer, Audience               string
	RequireExp                     bool
}

type logConfig struct {
	Format, Level string
}

// newServeConfig returns the defaults of `sserelay serve`.
func newServeConfig() *serveConfig {
	rc := relay.DefaultConfig()
	rc.TokenLeeway = defaultLeeway
	return &serveConfig{
		Relay:        rc,
		Stream:       relay.DefaultStreamOptions(),
		EpochIDs:     true,
		Embedded:     embeddedConfig{DataDir: "./sserelay-data", Listen: "127.0.0.1:4222", StoreSync: "2m"},
		HTTP:         httpConfig{Listen: "127.0.0.1:8080", ReadHeaderTimeout: 10 * time.Second, MaxHeaderBytes: 16 << 10},
		Log:          logConfig{Format: "text", Level: "info"},
		DrainTimeout: 5 * time.Second,
		StartTimeout: 30 * time.Second,
	}
}

// defaultLeeway is the clock skew allowed on exp and nbf: enough for a
// backend whose clock is a second or two ahead of the relay's (a token
// minted with nbf now would otherwise get a 401, on which an EventSource
// gives up for good), short next to any token's life.
const defaultLeeway = 5 * time.Second

// origins returns the CORS origins of --cors-origins.
func (h httpConfig) origins() []string { return splitList(h.CORSOrigins) }

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(list string) []string {
	var out []string
	for o := range strings.SplitSeq(list, ",") {
		if o = strings.TrimSpace(o); o != "" {
			out = append(out, o)
		}
	}
	return out
}
