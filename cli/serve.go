package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os/signal"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/sserelay/sserelay/relay"
	"github.com/sserelay/sserelay/relay/auth"
)

func serveCommand() *cli.Command {
	cfg := newServeConfig()
	flags := serveFlags(cfg)
	return &cli.Command{
		Name:  "serve",
		Usage: "run the relay (with an embedded NATS server unless --nats-url is set)",
		Flags: flags,
		Action: func(c *cli.Context) error {
			if err := validate(cfg, flags); err != nil {
				return usageError{err}
			}
			return serve(c, cfg)
		},
		OnUsageError: usage,
	}
}

func serve(c *cli.Context, cfg *serveConfig) error {
	log, err := newLogger(c.App.ErrWriter, cfg.Log.Format, cfg.Log.Level)
	if err != nil {
		return err
	}
	slog.SetDefault(log)
	if err := run(c.Context, cfg, log); err != nil {
		// In the log too: with --log-format json that is where operators look.
		log.Error("sserelay stopped", "err", err)
		return err
	}
	return nil
}

// run starts NATS, the relay and the HTTP server, and shuts them down in
// order when ctx ends or SIGINT or SIGTERM arrives. What can fail without
// NATS (ports, certificates, keys, the data dir) fails first; a signal
// during start-up stops it at once.
func run(ctx context.Context, cfg *serveConfig, log *slog.Logger) error {
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	startErr := func(err error) error {
		if ctx.Err() != nil {
			log.Info("stopped during start-up", "cause", err)
			return nil
		}
		return err
	}

	t := cfg.Tokens
	verifier, err := auth.NewVerifier(ctx, auth.Config{
		Secret: []byte(t.Secret), PublicKeyFile: t.PublicKeyFile, JWKSURL: t.JWKSURL,
		Issuer: t.Issuer, Audience: t.Audience, RequireExp: t.RequireExp, Leeway: cfg.Relay.TokenLeeway,
	})
	if err != nil {
		return startErr(fmt.Errorf("tokens: %w", err))
	}
	defer verifier.Close() // its JWKS refresher, if any
	h, err := listenHTTP(cfg, log)
	if err != nil {
		return err
	}
	defer h.closeUnserved()
	reg := newRegistry()
	ms, err := startMetrics(cfg.Metrics, reg, log)
	if err != nil {
		return err
	}
	defer ms.close()

	// One budget for start-up: reaching NATS, the stream, the first consumer.
	sctx, cancel := context.WithTimeoutCause(ctx, cfg.StartTimeout, fmt.Errorf("--start-timeout %s", cfg.StartTimeout))
	defer cancel()
	n, err := startNATS(sctx, cfg, log)
	if err != nil {
		return startErr(err)
	}
	defer n.close()

	rc := cfg.Relay
	rc.JetStream, rc.Verifier, rc.Logger = n.js, verifier, log
	rc.AllowedOrigins = cfg.HTTP.origins()
	rc.TrustedProxies = splitList(cfg.HTTP.TrustedProxies)
	rc.Registry, rc.NoMetrics = reg, cfg.Metrics.ListenOnly
	r, err := relay.New(rc)
	if err != nil {
		return err
	}
	err = r.Start(sctx)
	cancel()
	if err != nil {
		return startErr(err)
	}
	h.serve(r, log)

	select {
	case <-ctx.Done():
		log.Info("shutting down", "drain_timeout", cfg.DrainTimeout)
	case err := <-h.serveErr:
		_ = r.Shutdown(context.Background())
		return fmt.Errorf("http server: %w", err)
	}
	stop() // a second signal kills the process the default way
	shutdown(cfg.DrainTimeout, r, h, n, log)
	return nil
}

// shutdown stops in order: stop taking streams and send the open ones away,
// let the HTTP server finish what is in flight, stop the consumer, drain
// NATS (which flushes what this process published), then stop the embedded
// server. Failures are logged: the process is exiting either way.
func shutdown(drainTimeout time.Duration, r *relay.Relay, h *httpServer, n *natsSide, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), drainTimeout)
	defer cancel()
	// The listener stays open while streams close: new streams get their
	// retry hint and /readyz its 503, instead of a refused connection.
	// (Shutdown says so if they did not all close in time.)
	_ = r.WaitDrained(ctx)
	var errs []error
	if err := h.shutdown(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := r.Shutdown(ctx); err != nil {
		errs = append(errs, err)
	}
	if err := n.drain(3 * time.Second); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		log.Warn("unclean shutdown", "err", err)
	}
	log.Info("stopped")
}
