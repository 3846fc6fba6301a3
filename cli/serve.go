package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/urfave/cli/v2"

	"github.com/sserelay/sserelay/embedded"
	"github.com/sserelay/sserelay/relay"
	"github.com/sserelay/sserelay/relay/auth"
)

func serveFlags() []cli.Flag {
	return []cli.Flag{
		strFlag("listen", "127.0.0.1:8080", "HTTP listen address"),
		strFlag("nats-url", "", "external NATS server URL(s), comma-separated; empty runs an embedded server"),
		strFlag("nats-creds", "", "NATS credentials file for --nats-url"),
		strFlag("data-dir", "./sserelay-data", "embedded JetStream store directory"),
		strFlag("nats-listen", "127.0.0.1:4222", "embedded server's client address for outside publishers, or off"),
		strFlag("server-name", "", "embedded server name (default: host name)"),
		strFlag("store-sync", "2m", "embedded store fsync interval, or always (fsync before every acknowledgement: survives power loss, costs throughput)"),
		strFlag("js-domain", "", "JetStream domain (leaf-node setups)"),
		durFlag("drain-timeout", 5*time.Second, "on SIGTERM, time for open streams to close before the process stops"),
		strFlag("jwt-secret", "", "HS256 secret for tokens"),
		strFlag("jwt-public-key", "", "PEM public key file for RS256, ES256 or EdDSA tokens"),
		strFlag("jwks-url", "", "JWKS URL for RS256, ES256 or EdDSA tokens"),
		strFlag("jwt-issuer", "", "required iss claim"),
		strFlag("jwt-audience", "", "required aud claim"),
		boolFlag("jwt-require-exp", "refuse tokens without exp"),
		strFlag("subject-prefix", "sse", "first subject token"),
		strFlag("stream", "SSE", "JetStream stream name"),
		intFlag("stream-replicas", 1, "stream replicas (3 on a NATS cluster)"),
		&cli.BoolFlag{Name: "epoch-ids", EnvVars: env("epoch-ids"), Value: true, Usage: "start a newly created stream's sequence at the current time in microseconds, so that ids from a lost store are never taken for ids of the new one"},
		durFlag("retention-max-age", 24*time.Hour, "keep events this long: the resume window"),
		int64Flag("retention-max-bytes", 1<<30, "keep at most this many bytes of events (-1: no limit)"),
		int64Flag("retention-max-msgs", -1, "keep at most this many events (-1: no limit)"),
		durFlag("duplicate-window", 2*time.Minute, "Nats-Msg-Id de-duplication window"),
		strFlag("log-format", "text", "text (colored on a terminal) or json"),
		strFlag("log-level", "info", "debug, info, warn or error"),
		durFlag("keepalive", 15*time.Second, "comment line interval on idle streams"),
		durFlag("retry", 2*time.Second, "reconnection delay hinted to clients"),
		durFlag("write-timeout", 10*time.Second, "deadline of each write to a client; slower clients are closed"),
		intFlag("queue-events", 4096, "events queued per stream before the client catches up from the store"),
		intFlag("queue-bytes", 4<<20, "bytes queued per stream before the client catches up from the store"),
		intFlag("replay-batch", 1024, "events read from the store per request during a resume"),
		intFlag("replay-bytes", 1<<20, "bytes read from the store per request during a resume"),
		intFlag("max-replays", 32, "resumes reading the store at once"),
		intFlag("ring-events", 262144, "recent events kept in memory to serve resumes without reading the store (-1: off)"),
		intFlag("ring-bytes", 64<<20, "memory bound of those recent events"),
		intFlag("max-streams", 0, "open streams before new ones are asked to retry later (0: no limit)"),
		intFlag("token-cache", 10000, "verified tokens remembered until they expire, at most a minute (-1: off)"),
		intFlag("max-feeds", 16, "feeds per stream"),
		intFlag("max-topics", 16, "topics per stream"),
		intFlag("poll-page", 500, "events per poll=1 response"),
		int64Flag("max-publish-bytes", 64<<10, "POST /v1/publish body limit"),
		durFlag("publish-timeout", 5*time.Second, "wait for JetStream's acknowledgement of a publish"),
		durFlag("read-header-timeout", 10*time.Second, "HTTP request header timeout"),
		intFlag("max-header-bytes", 16<<10, "HTTP request header limit"),
		strFlag("cors-origins", "", "comma-separated origins allowed by CORS, or *"),
		boolFlag("no-demo", "do not serve the demo page at /"),
		boolFlag("h2c", "also accept HTTP/2 without TLS (prior knowledge), e.g. from an Envoy or nginx sidecar"),
		strFlag("debug-listen", "", "address for Go's pprof profiles (/debug/pprof/), e.g. 127.0.0.1:6060; empty: off"),
	}
}

func serveCommand() *cli.Command {
	return &cli.Command{
		Name:   "serve",
		Usage:  "run the relay (with an embedded NATS server unless --nats-url is set)",
		Flags:  append(serveFlags(), leafFlags()...),
		Action: serve,
	}
}

func serve(c *cli.Context) error {
	log, err := newLogger(c.App.ErrWriter, c.String("log-format"), c.String("log-level"))
	if err != nil {
		return err
	}
	slog.SetDefault(log)
	if err := run(c, log); err != nil {
		// In the log too: with --log-format json that is where operators look.
		log.Error("sserelay stopped", "err", err)
		return err
	}
	return nil
}

func run(c *cli.Context, log *slog.Logger) error {
	var err error
	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	verifier, err := auth.NewVerifier(ctx, auth.Config{
		Secret: []byte(c.String("jwt-secret")), PublicKeyFile: c.String("jwt-public-key"), JWKSURL: c.String("jwks-url"),
		Issuer: c.String("jwt-issuer"), Audience: c.String("jwt-audience"), RequireExp: c.Bool("jwt-require-exp"),
	})
	if err != nil {
		return fmt.Errorf("tokens: %w (set --jwt-secret, --jwt-public-key or --jwks-url)", err)
	}

	// NATS: embedded or external.
	var srv *embedded.Server
	opts := []nats.Option{
		nats.Name("sserelay"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		// Fail publishes at once while disconnected instead of buffering
		// them: a publisher told 503 must not see its event appear later.
		nats.ReconnectBufSize(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("NATS disconnected", "err", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("NATS reconnected", "url", nc.ConnectedUrlRedacted()) }),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { log.Warn("NATS error", "err", err) }),
	}
	url := c.String("nats-url")
	leaf, err := leafOptions(c)
	if err != nil {
		return err
	}
	if url == "" {
		listen := c.String("nats-listen")
		if listen == "off" {
			listen = ""
		}
		eo := embedded.Options{
			Name: c.String("server-name"), StoreDir: c.String("data-dir"), Listen: listen,
			Logger: log.With("component", "nats"), Leaf: leaf,
		}
		if sync := c.String("store-sync"); sync == "always" {
			eo.SyncAlways = true
		} else if eo.SyncInterval, err = time.ParseDuration(sync); err != nil || eo.SyncInterval <= 0 {
			return fmt.Errorf("--store-sync must be a positive duration or always, not %q", sync)
		}
		srv, err = embedded.Start(ctx, eo)
		if err != nil {
			return err
		}
		defer srv.Shutdown()
		opts = append(opts, srv.ConnectOption())
		log.Info("embedded NATS started", "data_dir", c.String("data-dir"), "client_url", srv.ClientURL())
	} else if cr := c.String("nats-creds"); cr != "" {
		opts = append(opts, nats.UserCredentials(cr))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return fmt.Errorf("connect to NATS %s: %w", url, err)
	}
	defer nc.Close()

	var js jetstream.JetStream
	if d := c.String("js-domain"); d != "" {
		js, err = jetstream.NewWithDomain(nc, d)
	} else {
		js, err = jetstream.New(nc)
	}
	if err != nil {
		return err
	}
	var firstSeq uint64
	if c.Bool("epoch-ids") {
		firstSeq = relay.EpochSeq(time.Now())
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	info, err := relay.EnsureStream(sctx, js, relay.StreamOptions{
		Name: c.String("stream"), SubjectPrefix: c.String("subject-prefix"),
		MaxAge: c.Duration("retention-max-age"), MaxBytes: c.Int64("retention-max-bytes"), MaxMsgs: c.Int64("retention-max-msgs"),
		Duplicates: c.Duration("duplicate-window"), Replicas: c.Int("stream-replicas"),
		FirstSeq: firstSeq,
	})
	cancel()
	if err != nil {
		return err
	}
	log.Info("stream ready", "stream", info.Config.Name, "subjects", info.Config.Subjects, "first_seq", info.State.FirstSeq, "last_seq", info.State.LastSeq, "max_age", info.Config.MaxAge)

	var origins []string
	for o := range strings.SplitSeq(c.String("cors-origins"), ",") {
		if o = strings.TrimSpace(o); o != "" {
			origins = append(origins, o)
		}
	}
	r, err := relay.New(relay.Config{
		Conn: nc, Verifier: verifier, Stream: c.String("stream"), SubjectPrefix: c.String("subject-prefix"),
		JetStreamDomain: c.String("js-domain"), Logger: log,
		Keepalive: c.Duration("keepalive"), Retry: c.Duration("retry"), WriteTimeout: c.Duration("write-timeout"),
		QueueEvents: c.Int("queue-events"), QueueBytes: c.Int("queue-bytes"),
		ReplayBatch: c.Int("replay-batch"), ReplayBytes: c.Int("replay-bytes"), MaxReplays: c.Int("max-replays"), MaxStreams: c.Int("max-streams"),
		RingEvents: c.Int("ring-events"), RingBytes: c.Int("ring-bytes"),
		TokenCache: c.Int("token-cache"), MaxFeeds: c.Int("max-feeds"), MaxTopics: c.Int("max-topics"), PollPage: c.Int("poll-page"),
		MaxPublishBytes: c.Int64("max-publish-bytes"), PublishTimeout: c.Duration("publish-timeout"),
		AllowedOrigins: origins, NoDemo: c.Bool("no-demo"),
	})
	if err != nil {
		return err
	}
	if err := r.Start(ctx); err != nil {
		return err
	}

	ln, err := net.Listen("tcp", c.String("listen"))
	if err != nil {
		_ = r.Shutdown(context.Background())
		return fmt.Errorf("listen: %w", err)
	}
	hs := &http.Server{
		Handler:           r.Handler(),
		ReadHeaderTimeout: c.Duration("read-header-timeout"),
		MaxHeaderBytes:    c.Int("max-header-bytes"),
		IdleTimeout:       2 * time.Minute,
		// No WriteTimeout: it would cut every stream. Streams set a deadline per write.
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	if c.Bool("h2c") {
		var p http.Protocols
		p.SetHTTP1(true)
		p.SetUnencryptedHTTP2(true)
		hs.Protocols = &p
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- hs.Serve(ln) }()
	if addr := c.String("debug-listen"); addr != "" {
		dbg, err := startDebug(addr, log)
		if err != nil {
			_ = hs.Close()
			_ = r.Shutdown(context.Background())
			return err
		}
		defer dbg.Close()
	}
	log.Info("sserelay listening", "addr", ln.Addr().String(), "version", version())

	select {
	case <-ctx.Done():
		log.Info("shutting down", "drain_timeout", c.Duration("drain-timeout"))
	case err := <-serveErr:
		_ = r.Shutdown(context.Background())
		return fmt.Errorf("http server: %w", err)
	}
	stop() // a second signal kills the process the default way

	// Order: stop taking streams and send the open ones away, let the HTTP
	// server finish what is in flight, stop the consumer, drain NATS (which
	// flushes what this process published), then stop the embedded server.
	dctx, cancel := context.WithTimeout(context.Background(), c.Duration("drain-timeout"))
	defer cancel()
	r.Drain()
	var errs []error
	if err := hs.Shutdown(dctx); err != nil {
		errs = append(errs, fmt.Errorf("http shutdown: %w", err))
		_ = hs.Close()
	}
	if err := r.Shutdown(dctx); err != nil {
		errs = append(errs, err)
	}
	if err := drainNATS(nc, 3*time.Second); err != nil {
		errs = append(errs, err)
	}
	if srv != nil {
		srv.Shutdown()
	}
	if err := errors.Join(errs...); err != nil {
		log.Warn("unclean shutdown", "err", err)
	}
	log.Info("stopped")
	return nil
}

// startDebug serves pprof on its own listener, away from the public port.
func startDebug(addr string, log *slog.Logger) (*http.Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("debug listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }() // ends when Close closes the listener
	log.Info("pprof listening", "addr", ln.Addr().String())
	return srv, nil
}

func drainNATS(nc *nats.Conn, timeout time.Duration) error {
	closed := make(chan struct{})
	nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
	if err := nc.Drain(); err != nil {
		nc.Close()
		return fmt.Errorf("drain NATS: %w", err)
	}
	select {
	case <-closed:
		return nil
	case <-time.After(timeout):
		nc.Close()
		return errors.New("drain NATS: timed out")
	}
}
