// Package embedded runs a nats-server with JetStream inside the relay process,
// so that `sserelay serve` needs nothing else to run.
package embedded

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Options configure the embedded server.
type Options struct {
	// Name is the server name shown in logs and monitoring (e.g. the pod name).
	Name string
	// StoreDir is the JetStream file store directory. Required: events must
	// survive a restart.
	StoreDir string
	// Listen is the host:port of the client listener for outside publishers.
	// Empty means no listener: only in-process connections.
	Listen string
	// MaxMemory and MaxStore cap JetStream memory and file storage in bytes;
	// 0 lets the server pick a share of the machine.
	MaxMemory, MaxStore int64
	// SyncInterval is how often the store is flushed to disk with fsync
	// (0: the server's default, 2 minutes). Every acknowledged event is
	// written to the operating system before the ack either way, so a
	// killed process loses nothing; SyncAlways (fsync before each ack) also
	// covers a machine that loses power, at a large cost per publish.
	SyncInterval time.Duration
	SyncAlways   bool
	// Leaf, when set, makes the server a leaf node of a hub cluster. Its own
	// JetStream is then off (StoreDir is not used): the stream lives in the
	// hub, and the relay reaches it through the hub's JetStream domain.
	Leaf *LeafOptions
	// Logger receives the server's log lines; nil discards them.
	Logger *slog.Logger
	// ReadyTimeout bounds start-up (default 30 s: JetStream recovers its
	// store before it reports ready, which takes time on a large store).
	ReadyTimeout time.Duration
}

// Server is a running embedded nats-server.
type Server struct {
	ns       *server.Server
	hub      string    // the leaf node's hub URLs, passwords redacted; "" for a standalone server
	unlock   sync.Once // releases the store directory's lock
	unlockFn func()
}

// lockFile is the store directory's lock, held while a server uses it.
const lockFile = "sserelay.lock"

// ErrStoreLocked is wrapped by the error of Start when another process
// holds the store directory: two JetStream servers on one store hand out
// the same sequence numbers and overwrite each other's acknowledged events.
var ErrStoreLocked = errors.New("embedded: store directory in use")

// Start starts the server and waits until it accepts connections.
func Start(ctx context.Context, o Options) (*Server, error) {
	leaf := o.Leaf != nil
	if o.StoreDir == "" && !leaf {
		return nil, errors.New("embedded: a store directory is required")
	}
	opts := &server.Options{
		ServerName: o.Name,
		// A leaf hosts no stream: with JetStream on both sides of the link,
		// the local server would answer the relay's (and the app's) JetStream
		// requests from a store of its own, and pods would not share events.
		JetStream: !leaf,
		StoreDir:  o.StoreDir,
		// The relay handles signals itself; the server's own handlers would
		// exit the process on SIGINT and skip the relay's drain.
		NoSigs:             true,
		NoLog:              o.Logger == nil,
		JetStreamMaxMemory: o.MaxMemory,
		JetStreamMaxStore:  o.MaxStore,
		DontListen:         o.Listen == "",
		SyncInterval:       o.SyncInterval,
		SyncAlways:         o.SyncAlways,
		// Lame duck only matters with a listener; keep it short so that a
		// sidecar fits in a default termination grace period.
		LameDuckDuration:    5 * time.Second,
		LameDuckGracePeriod: 1 * time.Second,
	}
	if o.Listen != "" {
		host, port, err := net.SplitHostPort(o.Listen)
		if err != nil {
			return nil, fmt.Errorf("embedded: listen address %q: %w", o.Listen, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil {
			return nil, fmt.Errorf("embedded: listen port %q: %w", port, err)
		}
		if p == 0 {
			p = server.RANDOM_PORT
		}
		opts.Host, opts.Port = host, p
	}
	if leaf {
		opts.StoreDir = ""
		remote, err := o.Leaf.remote()
		if err != nil {
			return nil, err
		}
		opts.LeafNode.Remotes = []*server.RemoteLeafOpts{remote}
		opts.LeafNode.ReconnectInterval = o.Leaf.reconnect()
	}
	timeout := o.ReadyTimeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	// Always a logger, even a silent one: a failed listen reaches Start only
	// through the server's Fatalf.
	lg := &logger{l: o.Logger, fatal: make(chan string, 1)}
	if lg.l == nil {
		lg.l = slog.New(slog.DiscardHandler)
	}
	s := &Server{unlockFn: func() {}}
	if !leaf {
		// A restart that overlaps the old process's drain waits for it, within
		// the same budget as the rest of start-up.
		unlock, err := lockStore(ctx, o.StoreDir, time.Now().Add(timeout), lg.l)
		if err != nil {
			return nil, err
		}
		s.unlockFn = unlock
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		s.release()
		return nil, fmt.Errorf("embedded: configure server: %w", err)
	}
	s.ns = ns
	ns.SetLoggerV2(lg, false, false, false)
	go ns.Start() // returns once the accept loops run; the server owns its goroutines
	if err := waitReady(ctx, ns, timeout, lg.fatal); err != nil {
		s.Shutdown()
		if strings.HasPrefix(err.Error(), "Error listening on port") {
			return nil, fmt.Errorf("%w on %s: %w", ErrListen, o.Listen, err)
		}
		return nil, fmt.Errorf("embedded: %w", err)
	}
	if leaf {
		if err := waitLeaf(ctx, ns, timeout); err != nil {
			s.Shutdown()
			return nil, fmt.Errorf("embedded: %w (hub %s)", err, redacted(o.Leaf.URLs))
		}
		s.hub = redacted(o.Leaf.URLs)
		return s, nil
	}
	if !ns.JetStreamEnabled() {
		s.Shutdown()
		return nil, errors.New("embedded: JetStream did not start (check the store directory)")
	}
	return s, nil
}

// release drops the store directory's lock, once.
func (s *Server) release() { s.unlock.Do(s.unlockFn) }

// ConnectOption returns the nats.Option that connects a client in-process,
// through a pipe, without the TCP listener.
func (s *Server) ConnectOption() nats.Option { return nats.InProcessServer(s.ns) }

// ClientURL returns the URL of the client listener, or "" when there is none.
// (With no listener the server still reports nats://0.0.0.0:4222, which is
// not reachable; never hand that out.)
func (s *Server) ClientURL() string {
	if s.ns.Addr() == nil {
		return ""
	}
	return s.ns.ClientURL()
}

// Hub returns the hub URLs of a leaf node (passwords redacted), or "" when
// the server is not a leaf node.
func (s *Server) Hub() string { return s.hub }

// NATS returns the underlying server, for tests and advanced wiring.
func (s *Server) NATS() *server.Server { return s.ns }

// Shutdown stops the server and waits until it has flushed its store. It is
// safe to call more than once.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
	s.release() // only now: the store is flushed and closed
}

// ErrListen is wrapped by the error of Start when the client port cannot
// be bound (another process has it).
var ErrListen = errors.New("embedded: cannot listen")

// waitReady waits until ns accepts connections, ctx ends, the server
// reports a fatal error (a port it cannot bind), or timeout passes.
func waitReady(ctx context.Context, ns *server.Server, timeout time.Duration, fatal <-chan string) error {
	deadline := time.Now().Add(timeout)
	for !ns.ReadyForConnections(25 * time.Millisecond) {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case msg := <-fatal:
			return errors.New(msg)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("server not ready after %s", timeout)
		}
	}
	return nil
}

// logger adapts the server's printf-style logger to slog. Fatal errors
// (which the server does not act on when embedded) also go to fatal.
type logger struct {
	l     *slog.Logger
	fatal chan string
}

// Notices (the start-up banner among them) go to debug: the relay logs what matters.
func (g *logger) Noticef(format string, v ...any) { g.l.Debug(fmt.Sprintf(format, v...)) }
func (g *logger) Warnf(format string, v ...any)   { g.l.Warn(fmt.Sprintf(format, v...)) }
func (g *logger) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	g.l.Error(msg)
	select {
	case g.fatal <- msg:
	default: // Start has one already, or no longer waits
	}
}
func (g *logger) Errorf(format string, v ...any) { g.l.Error(fmt.Sprintf(format, v...)) }
func (g *logger) Debugf(format string, v ...any) { g.l.Debug(fmt.Sprintf(format, v...)) }
func (g *logger) Tracef(format string, v ...any) { g.l.Debug(fmt.Sprintf(format, v...)) }
