package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"syscall"
	"time"

	"github.com/sserelay/sserelay/relay"
)

// httpServer is the public HTTP server.
type httpServer struct {
	hs       *http.Server
	ln       net.Listener
	scheme   string
	serving  bool
	serveErr chan error // Serve's error, if it stops by itself
}

// listenHTTP binds --listen and prepares the server (TLS included), so
// that a busy port or an unreadable certificate fails start-up before NATS
// starts. Nothing is served until serve.
func listenHTTP(cfg *serveConfig, log *slog.Logger) (*httpServer, error) {
	ln, err := net.Listen("tcp", cfg.HTTP.Listen)
	if err != nil {
		return nil, listenError("--listen", cfg.HTTP.Listen, err, "stop what listens there or choose another address")
	}
	s := &httpServer{
		hs: &http.Server{
			ReadHeaderTimeout: cfg.HTTP.ReadHeaderTimeout,
			MaxHeaderBytes:    cfg.HTTP.MaxHeaderBytes,
			IdleTimeout:       2 * time.Minute,
			// No WriteTimeout: it would cut every stream. Streams set a deadline per write.
			ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		},
		ln:       ln,
		scheme:   "http",
		serveErr: make(chan error, 1),
	}
	if cfg.HTTP.H2C {
		var p http.Protocols
		p.SetHTTP1(true)
		p.SetUnencryptedHTTP2(true)
		s.hs.Protocols = &p
	}
	if cfg.HTTP.TLSCert != "" || cfg.HTTP.TLSKey != "" {
		if s.hs.TLSConfig, err = serverTLS(cfg.HTTP.TLSCert, cfg.HTTP.TLSKey, log); err != nil {
			_ = ln.Close()
			return nil, fmt.Errorf("--tls-cert %s, --tls-key %s: %w", cfg.HTTP.TLSCert, cfg.HTTP.TLSKey, err)
		}
		if s.hs.Protocols != nil {
			s.hs.Protocols.SetHTTP2(true)
		}
		s.scheme = "https"
	}
	return s, nil
}

// serve serves the relay's handler on the listener, behind the relay's
// connection limit; an error of Serve itself arrives on serveErr.
func (s *httpServer) serve(r *relay.Relay, log *slog.Logger) {
	s.hs.Handler = r.Handler()
	s.ln = r.Listener(s.ln) // --max-connections, and running out of descriptors logged
	s.serving = true
	if s.hs.TLSConfig != nil {
		// The certificate comes from TLSConfig.GetCertificate.
		go func() { s.serveErr <- s.hs.ServeTLS(s.ln, "", "") }() // ends with Shutdown or Close
	} else {
		go func() { s.serveErr <- s.hs.Serve(s.ln) }() // ends with Shutdown or Close
	}
	log.Info("sserelay listening", "addr", s.ln.Addr().String(), "scheme", s.scheme, "version", version())
}

// closeUnserved closes the listener of a server that never served (start-up
// failed after listenHTTP); shutdown closes a serving one.
func (s *httpServer) closeUnserved() {
	if !s.serving {
		_ = s.ln.Close()
	}
}

// listenError explains a failed bind of flag's address: what to do when the
// port is taken or privileged.
func listenError(flag, addr string, err error, inUse string) error {
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return fmt.Errorf("%s %s: the address is in use: %s (%w)", flag, addr, inUse, err)
	case errors.Is(err, syscall.EACCES):
		return fmt.Errorf("%s %s: permission denied: ports below 1024 need privileges, choose another (%w)", flag, addr, err)
	}
	return fmt.Errorf("%s %s: %w", flag, addr, err)
}

// shutdown lets in-flight requests finish until ctx ends, then closes the rest.
func (s *httpServer) shutdown(ctx context.Context) error {
	if err := s.hs.Shutdown(ctx); err != nil {
		_ = s.hs.Close()
		return fmt.Errorf("http shutdown: %w", err)
	}
	return nil
}
