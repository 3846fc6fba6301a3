package cli

import (
	"slices"

	"github.com/urfave/cli/v2"
)

// Flag categories of `sserelay serve` (its help lists them by name).
const (
	catHTTP     = "HTTP"
	catStreams  = "SSE streams"
	catLimits   = "Limits"
	catResume   = "Resume"
	catTokens   = "Tokens"
	catNATS     = "NATS"
	catEmbedded = "Embedded NATS server"
	catStream   = "JetStream stream and retention"
	catLogging  = "Logging"
)

// ServeFlags returns the flags of `sserelay serve`, bound to a new default
// configuration. Every flag has the environment variable SSERELAY_<FLAG>
// (upper case, '-' as '_'). The names are part of the interface contract:
// scripts and manifests set them (the k8s tests check them against this).
func ServeFlags() []cli.Flag { return serveFlags(newServeConfig()) }

func serveFlags(cfg *serveConfig) []cli.Flag {
	r, s := &cfg.Relay, &cfg.Stream
	return append([]cli.Flag{
		stringVar(&cfg.HTTP.Listen, catHTTP, "listen", "HTTP listen address"),
		boolVar(&cfg.HTTP.H2C, catHTTP, "h2c", "also accept HTTP/2 without TLS (prior knowledge), e.g. from an Envoy or nginx sidecar"),
		stringVar(&cfg.HTTP.TLSCert, catHTTP, "tls-cert", "PEM certificate (chain) file: serve HTTPS with HTTP/2, so that all the tabs of a browser share one connection; reloaded when it changes (with --tls-key)"),
		stringVar(&cfg.HTTP.TLSKey, catHTTP, "tls-key", "PEM key file of --tls-cert"),
		stringVar(&cfg.HTTP.CORSOrigins, catHTTP, "cors-origins", "comma-separated origins allowed by CORS, with credentials (cookies); * adds any other origin, without credentials"),
		stringVar(&cfg.HTTP.TrustedProxies, catHTTP, "trusted-proxies", "comma-separated CIDR prefixes of the proxies in front of the relay, whose X-Forwarded-For names the client for the per-address limit"),
		durationVar(&r.BodyTimeout, catHTTP, "body-timeout", "time to receive a request body (a client that announces one and sends nothing is answered and closed)"),
		intVar(&r.MaxConnections, catHTTP, "max-connections", "open client connections; beyond it new ones are closed at once (0: the open-files limit less 256; -1: no limit)"),
		boolVar(&r.NoDemo, catHTTP, "no-demo", "do not serve the demo page at /"),
		durationVar(&cfg.HTTP.ReadHeaderTimeout, catHTTP, "read-header-timeout", "HTTP request header timeout"),
		intVar(&cfg.HTTP.MaxHeaderBytes, catHTTP, "max-header-bytes", "HTTP request header limit"),
		durationVar(&cfg.DrainTimeout, catHTTP, "drain-timeout", "on SIGTERM, time for open streams to close before the process stops"),
		durationVar(&cfg.StartTimeout, catNATS, "start-timeout", "time for the whole start-up (the embedded server, a reachable --nats-url server, the JetStream stream, the relay's consumer while a cluster elects leaders) before giving up"),

		durationVar(&r.Keepalive, catStreams, "keepalive", "comment line interval on idle streams"),
		durationVar(&r.Retry, catStreams, "retry", "reconnection delay hinted to clients"),
		durationVar(&r.WriteTimeout, catStreams, "write-timeout", "deadline of each write to a client; slower clients are closed"),
		intVar(&r.QueueEvents, catStreams, "queue-events", "events queued per stream before the client catches up from the store"),
		intVar(&r.QueueBytes, catStreams, "queue-bytes", "bytes queued per stream before the client catches up from the store"),
		intVar(&r.PollPage, catStreams, "poll-page", "events per poll=1 response"),
		boolVar(&r.ExclusionWithoutUser, catStreams, "exclusion-without-user", "let X-Connection-Id exclude a connection without X-Connection-User saying whose it is (for raw publishers that cannot set it; anyone who learns a connection id can then suppress events to it)"),
		intVar(&r.PollPageBytes, catStreams, "poll-page-bytes", "event data bytes per poll=1 response (at least one event)"),

		intVar(&r.MaxStreams, catLimits, "max-streams", "open streams before new ones are asked to retry later (0: no limit)"),
		intVar(&r.MaxFeeds, catLimits, "max-feeds", "feeds per stream"),
		intVar(&r.MaxTopics, catLimits, "max-topics", "topics per stream"),
		intVar(&r.MaxStreamsPerUser, catLimits, "max-streams-per-user", "open streams of one user (token subject) before their new ones are asked to retry later (-1: no limit)"),
		float64Var(&r.UserStreamRate, catLimits, "user-stream-rate", "new streams and polls per second of one user (-1: no limit)"),
		intVar(&r.UserStreamBurst, catLimits, "user-stream-burst", "burst of --user-stream-rate"),
		float64Var(&r.IPStreamRate, catLimits, "ip-stream-rate", "new streams and polls per second of one client address, IPv6 by /64 (-1: no limit); see --trusted-proxies"),
		intVar(&r.IPStreamBurst, catLimits, "ip-stream-burst", "burst of --ip-stream-rate"),
		float64Var(&r.PublishRate, catLimits, "publish-rate", "POST /v1/publish requests per second of one token subject, beyond it 429 (-1: no limit)"),
		intVar(&r.PublishBurst, catLimits, "publish-burst", "burst of --publish-rate"),
		intVar(&r.LimiterKeys, catLimits, "limiter-keys", "users and addresses each rate limit remembers (idle ones are forgotten first)"),
		int64Var(&r.MaxPublishBytes, catLimits, "max-publish-bytes", "POST /v1/publish body limit"),
		durationVar(&r.PublishTimeout, catLimits, "publish-timeout", "wait for JetStream's acknowledgement of a publish"),
		intVar(&r.PublishWindow, catLimits, "publish-window", "POST /v1/publish events awaiting JetStream's acknowledgement at once"),

		intVar(&r.ReplayBatch, catResume, "replay-batch", "events read from the store per request during a resume"),
		intVar(&r.ReplayBytes, catResume, "replay-bytes", "bytes read from the store per request during a resume"),
		intVar(&r.ReplayConsumerMin, catResume, "replay-consumer-min", "a resume that finds more events than this of one subject in the store reads them through a short-lived JetStream consumer, cheaper per event than Direct Get (-1: never)"),
		intVar(&r.ReplayConsumers, catResume, "replay-consumers", "the most short-lived JetStream consumers this relay's resumes hold at once, beyond which they read with Direct Get; they count against the stream's consumer limit, shared with every other relay on the stream (-1: none)"),
		durationVar(&r.RequestTimeout, catResume, "request-timeout", "wait for each store read of a resume (a Direct Get batch, a replay consumer's creation or pull) before the stream is closed or falls back"),
		intVar(&r.MaxReplays, catResume, "max-replays", "resumes and polls reading the store at once"),
		intVar(&r.MaxReplaysPerUser, catResume, "max-replays-per-user", "of --max-replays, the slots one user holds at once"),
		intVar(&r.RingEvents, catResume, "ring-events", "recent events kept in memory to serve resumes without reading the store (-1: off)"),
		intVar(&r.RingBytes, catResume, "ring-bytes", "memory bound of those recent events"),

		stringVar(&cfg.Tokens.Secret, catTokens, "jwt-secret", "HS256 secret for tokens"),
		stringVar(&cfg.Tokens.PublicKeyFile, catTokens, "jwt-public-key", "PEM public key file for RS256, ES256 or EdDSA tokens"),
		stringVar(&cfg.Tokens.JWKSURL, catTokens, "jwks-url", "JWKS URL for RS256, ES256 or EdDSA tokens"),
		stringVar(&cfg.Tokens.Issuer, catTokens, "jwt-issuer", "required iss claim"),
		stringVar(&cfg.Tokens.Audience, catTokens, "jwt-audience", "required aud claim"),
		boolVar(&cfg.Tokens.RequireExp, catTokens, "jwt-require-exp", "refuse tokens without exp"),
		durationVar(&r.TokenLeeway, catTokens, "jwt-leeway", "clock skew allowed on exp and nbf (0: none); a stream ends this long after its token's exp"),
		intVar(&r.TokenCache, catTokens, "token-cache", "verified tokens remembered until they expire, at most a minute (-1: off)"),

		stringVar(&cfg.Embedded.DataDir, catEmbedded, "data-dir", "embedded JetStream store directory"),
		stringVar(&cfg.Embedded.Listen, catEmbedded, "nats-listen", "embedded server's client address for outside publishers, or off"),
		stringVar(&cfg.Embedded.ServerName, catEmbedded, "server-name", "embedded server name (default: host name)"),
		stringVar(&cfg.Embedded.StoreSync, catEmbedded, "store-sync", "embedded store fsync interval, or always (fsync before every acknowledgement: survives power loss, costs throughput)"),

		stringVar(&r.Stream, catStream, "stream", "JetStream stream name"),
		stringVar(&r.SubjectPrefix, catStream, "subject-prefix", "first subject token"),
		intVar(&s.Replicas, catStream, "stream-replicas", "stream replicas (3 on a NATS cluster)"),
		boolVar(&cfg.EpochIDs, catStream, "epoch-ids", "start a newly created stream's sequence at the current time in microseconds, so that ids from a lost store are never taken for ids of the new one"),
		durationVar(&s.MaxAge, catStream, "retention-max-age", "keep events this long: the resume window"),
		int64Var(&s.MaxBytes, catStream, "retention-max-bytes", "keep at most this many bytes of events (-1: no limit)"),
		int64Var(&s.MaxMsgs, catStream, "retention-max-msgs", "keep at most this many events (-1: no limit)"),
		durationVar(&s.Duplicates, catStream, "duplicate-window", "Nats-Msg-Id de-duplication window"),

		stringVar(&cfg.Log.Format, catLogging, "log-format", "text (colored on a terminal) or json"),
		stringVar(&cfg.Log.Level, catLogging, "log-level", "debug, info, warn or error"),
	}, slices.Concat(natsFlags(&cfg.NATS, catNATS, "external NATS server URL(s), comma-separated; empty runs an embedded server"),
		leafFlags(&cfg.Leaf), metricsFlags(&cfg.Metrics))...)
}
