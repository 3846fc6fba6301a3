package cli

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// certReloader hands out the certificate in certFile and keyFile and loads
// them again when either file changes (size or modification time), so that
// a renewed certificate (cert-manager, certbot, a mounted Kubernetes secret)
// is used without a restart. Changes are looked for at most once per
// checkEvery, on a TLS handshake. A pair that does not load (a renewal
// caught half-written) keeps the previous certificate and is tried again.
type certReloader struct {
	certFile, keyFile string
	checkEvery        time.Duration
	log               *slog.Logger

	mu      sync.Mutex
	cert    *tls.Certificate
	stamp   [2]fileStamp
	checked time.Time
}

type fileStamp struct {
	size int64
	mod  time.Time
}

func stampOf(path string) (fileStamp, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{fi.Size(), fi.ModTime()}, nil
}

// newCertReloader loads the pair once; an error here stops the start-up.
func newCertReloader(certFile, keyFile string, log *slog.Logger) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile, checkEvery: time.Second, log: log}
	if err := r.load(); err != nil {
		return nil, err
	}
	return r, nil
}

// load reads the pair; the caller holds mu or is the constructor.
func (r *certReloader) load() error {
	var st [2]fileStamp
	var err error
	if st[0], err = stampOf(r.certFile); err != nil {
		return fmt.Errorf("tls certificate: %w", err)
	}
	if st[1], err = stampOf(r.keyFile); err != nil {
		return fmt.Errorf("tls key: %w", err)
	}
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("tls certificate %s and key %s: %w", r.certFile, r.keyFile, err)
	}
	r.cert, r.stamp = &cert, st
	return nil
}

// GetCertificate is tls.Config.GetCertificate.
func (r *certReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := time.Now(); now.Sub(r.checked) >= r.checkEvery {
		r.checked = now
		c, errC := stampOf(r.certFile)
		k, errK := stampOf(r.keyFile)
		if errC == nil && errK == nil && (c != r.stamp[0] || k != r.stamp[1]) {
			if err := r.load(); err != nil {
				r.log.Warn("tls certificate not reloaded; keeping the previous one", "err", err)
			} else {
				r.log.Info("tls certificate reloaded", "cert", r.certFile)
			}
		}
	}
	return r.cert, nil
}

// serverTLS returns the TLS configuration of `serve --tls-cert/--tls-key`:
// HTTP/2 first (browsers share one connection among all the tabs of an
// origin, instead of 6 per origin over HTTP/1.1), then HTTP/1.1.
func serverTLS(certFile, keyFile string, log *slog.Logger) (*tls.Config, error) {
	if (certFile == "") != (keyFile == "") {
		return nil, fmt.Errorf("--tls-cert and --tls-key go together")
	}
	r, err := newCertReloader(certFile, keyFile, log)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: r.GetCertificate,
		NextProtos:     []string{"h2", "http/1.1"},
	}, nil
}
