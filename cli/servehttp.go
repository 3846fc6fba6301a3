package cli

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// httpServer is the public HTTP server.
type httpServer struct {
	hs       *http.Server
	serveErr chan error // Serve's error, if it stops by itself
}

// startHTTP listens and serves h.
func startHTTP(cfg *serveConfig, h http.Handler, log *slog.Logger) (*httpServer, error) {
	ln, err := net.Listen("tcp", cfg.HTTP.Listen)
	if err != nil {
		return nil, fmt.Errorf("listen: %w", err)
	}
	s := &httpServer{
		hs: &http.Server{
			Handler:           h,
			ReadHeaderTimeout: cfg.HTTP.ReadHeaderTimeout,
			MaxHeaderBytes:    cfg.HTTP.MaxHeaderBytes,
			IdleTimeout:       2 * time.Minute,
			// No WriteTimeout: it would cut every stream. Streams set a deadline per write.
			ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		},
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
			return nil, err
		}
		if s.hs.Protocols != nil {
			s.hs.Protocols.SetHTTP2(true)
		}
	}
	scheme := "http"
	if s.hs.TLSConfig != nil {
		scheme = "https"
		// The certificate comes from TLSConfig.GetCertificate.
		go func() { s.serveErr <- s.hs.ServeTLS(ln, "", "") }() // ends with Shutdown or Close
	} else {
		go func() { s.serveErr <- s.hs.Serve(ln) }() // ends with Shutdown or Close
	}
	log.Info("sserelay listening", "addr", ln.Addr().String(), "scheme", scheme, "version", version())
	return s, nil
}

// shutdown lets in-flight requests finish until ctx ends, then closes the rest.
func (s *httpServer) shutdown(ctx context.Context) error {
	if err := s.hs.Shutdown(ctx); err != nil {
		_ = s.hs.Close()
		return fmt.Errorf("http shutdown: %w", err)
	}
	return nil
}
