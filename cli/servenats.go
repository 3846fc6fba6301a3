package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sserelay/sserelay/embedded"
	"github.com/sserelay/sserelay/relay"
)

// natsSide is the relay's NATS: the connection, its JetStream context with
// the stream ensured, and the embedded server when there is no --nats-url.
type natsSide struct {
	srv *embedded.Server // nil with an external server
	nc  *nats.Conn
	js  jetstream.JetStream
}

// startNATS starts the embedded server (unless --nats-url is set), connects
// and creates or updates the stream, within ctx (the start-up budget,
// --start-timeout); nothing it returns holds on to ctx.
func startNATS(ctx context.Context, cfg *serveConfig, log *slog.Logger) (_ *natsSide, err error) {
	n := &natsSide{}
	defer func() {
		if err != nil {
			n.close()
		}
	}()
	opts := connectOptions(log)
	leaf, err := leafOptions(cfg)
	if err != nil {
		return nil, err
	}
	if cfg.NATS.URL == "" {
		if n.srv, err = startEmbedded(ctx, cfg.Embedded, leaf, log); err != nil {
			return nil, err
		}
		opts = append(opts, n.srv.ConnectOption())
	} else {
		auth, err := cfg.NATS.options()
		if err != nil {
			return nil, err
		}
		opts = append(opts, auth...)
	}
	if n.nc, err = connectRetrying(ctx, cfg, opts, log); err != nil {
		return nil, fmt.Errorf("connect to NATS %s: %w", redactedURLs(cfg.NATS.URL), err)
	}
	if cfg.NATS.URL != "" {
		log.Info("NATS connected", "url", n.nc.ConnectedUrlRedacted(), "servers", redactedURLs(cfg.NATS.URL))
	}
	if cfg.NATS.Domain != "" {
		n.js, err = jetstream.NewWithDomain(n.nc, cfg.NATS.Domain)
	} else {
		n.js, err = jetstream.New(n.nc)
	}
	if err != nil {
		return nil, fmt.Errorf("jetstream: %w", err)
	}

	so := cfg.Stream
	so.Name, so.SubjectPrefix = cfg.Relay.Stream, cfg.Relay.SubjectPrefix
	if cfg.EpochIDs {
		so.FirstSeq = relay.EpochSeq(time.Now())
	}
	info, err := relay.EnsureStream(ctx, n.js, so)
	if err != nil {
		return nil, err
	}
	log.Info("stream ready", "stream", info.Config.Name, "subjects", info.Config.Subjects, "first_seq", info.State.FirstSeq, "last_seq", info.State.LastSeq, "max_age", info.Config.MaxAge)
	return n, nil
}

// connectRetrying connects, retrying while no server of --nats-url can be
// reached, until ctx (the start-up budget) ends: a sidecar that starts
// before its NATS cluster does waits for it instead of exiting (and
// crash-looping). Any other error (credentials, TLS) is final at once.
func connectRetrying(ctx context.Context, cfg *serveConfig, opts []nats.Option, log *slog.Logger) (*nats.Conn, error) {
	wait := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		nc, err := nats.Connect(cfg.NATS.URL, opts...)
		if err == nil || !errors.Is(err, nats.ErrNoServers) || cfg.NATS.URL == "" {
			return nc, err
		}
		if attempt == 1 {
			log.Warn("NATS not reachable yet, retrying", "servers", redactedURLs(cfg.NATS.URL), "start_timeout", cfg.StartTimeout, "err", err)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("%w (still, after %d attempts: %w)", err, attempt, context.Cause(ctx))
		case <-t.C:
		}
		wait = min(2*wait, 2*time.Second)
	}
}

// connectOptions are the options of the relay's connection, embedded or not.
func connectOptions(log *slog.Logger) []nats.Option {
	return []nats.Option{
		nats.Name("sserelay"),
		// Reconnect for ever, backing off (reconnectDelay) once every
		// server of the list has failed.
		nats.MaxReconnects(-1),
		nats.CustomReconnectDelay(reconnectDelay),
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
}

func startEmbedded(ctx context.Context, ec embeddedConfig, leaf *embedded.LeafOptions, log *slog.Logger) (*embedded.Server, error) {
	listen := ec.Listen
	if listen == "off" {
		listen = ""
	}
	eo := embedded.Options{Name: ec.ServerName, StoreDir: ec.DataDir, Listen: listen, Leaf: leaf, Logger: log.With("component", "nats")}
	var ok bool
	if eo.SyncAlways, eo.SyncInterval, ok = ec.storeSync(); !ok {
		return nil, fmt.Errorf("--store-sync must be a positive duration or always, not %q", ec.StoreSync)
	}
	if leaf == nil {
		if err := checkDataDir(ec.DataDir); err != nil {
			return nil, err
		}
	}
	srv, err := embedded.Start(ctx, eo)
	if errors.Is(err, embedded.ErrListen) {
		return nil, fmt.Errorf("--nats-listen %s: the address is in use (another NATS server or relay?): set --nats-listen off if no outside publisher needs it (the relay itself does not), or another address (%w)", ec.Listen, err)
	}
	if errors.Is(err, embedded.ErrStoreLocked) {
		return nil, fmt.Errorf("--data-dir %s: %w; give each relay a directory of its own", ec.DataDir, err)
	}
	if err != nil {
		return nil, err
	}
	if hub := srv.Hub(); hub != "" {
		log.Info("embedded NATS started", "leaf_of", hub, "client_url", srv.ClientURL())
	} else {
		log.Info("embedded NATS started", "data_dir", ec.DataDir, "client_url", srv.ClientURL())
	}
	return srv, nil
}

// checkDataDir makes sure the embedded store's directory exists and takes
// files, so that a bad --data-dir fails with its name instead of deep in
// JetStream's start-up.
func checkDataDir(dir string) error {
	fail := func(err error) error {
		return fmt.Errorf("--data-dir %s: %w (the embedded JetStream store needs a directory it can write)", dir, err)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fail(err)
	}
	f, err := os.CreateTemp(dir, ".sserelay-probe-*")
	if err != nil {
		return fail(err)
	}
	_ = f.Close()
	return os.Remove(f.Name())
}

// drain drains the connection (flushing what the relay published), then
// stops the embedded server.
func (n *natsSide) drain(timeout time.Duration) error {
	err := drainNATS(n.nc, timeout)
	if n.srv != nil {
		n.srv.Shutdown()
	}
	return err
}

// close closes what is still open; after drain it does nothing.
func (n *natsSide) close() {
	if n.nc != nil {
		n.nc.Close()
	}
	if n.srv != nil {
		n.srv.Shutdown()
	}
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
