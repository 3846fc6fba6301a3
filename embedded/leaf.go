package embedded

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// LeafOptions make the embedded server a leaf node of a hub cluster: the
// app in the pod publishes to the embedded server on 127.0.0.1 as it would
// without a hub, and the leaf link carries its messages to the hub, where
// the replicated stream is, and the relay's JetStream traffic back and forth.
type LeafOptions struct {
	// URLs of the hub's leaf node port, e.g. nats-leaf://nats:7422 (the
	// scheme may also be tls://; user:password@ in a URL authenticates).
	// The leaf connects to one of them and fails over to the others.
	URLs []string
	// Credentials is a NATS credentials file (user JWT and NKey seed).
	Credentials string
	// TLSCA is a PEM file of the CAs that sign the hub's certificate (empty:
	// the system's). TLSCert and TLSKey are the leaf's client certificate,
	// for a hub that verifies clients. Any of the three, or a tls:// URL,
	// turns TLS on.
	TLSCA, TLSCert, TLSKey string
	// ReconnectInterval is the wait between attempts to reach the hub
	// (default 1 s).
	ReconnectInterval time.Duration
}

func (l *LeafOptions) reconnect() time.Duration {
	if l.ReconnectInterval > 0 {
		return l.ReconnectInterval
	}
	return time.Second
}

// remote turns the options into the server's remote, checking every file
// now so that a typo fails the start instead of every connect.
func (l *LeafOptions) remote() (*server.RemoteLeafOpts, error) {
	if len(l.URLs) == 0 {
		return nil, errors.New("embedded: leaf node: no hub URL")
	}
	r := &server.RemoteLeafOpts{Credentials: l.Credentials}
	useTLS := l.TLSCA != "" || l.TLSCert != "" || l.TLSKey != ""
	for _, s := range l.URLs {
		u, err := url.Parse(strings.TrimSpace(s))
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("embedded: leaf node URL %q: want nats-leaf://host:port", redactedURL(s))
		}
		switch u.Scheme {
		case "nats-leaf", "nats":
		case "tls":
			useTLS = true
		default:
			return nil, fmt.Errorf("embedded: leaf node URL %q: scheme %q, want nats-leaf or tls", u.Redacted(), u.Scheme)
		}
		r.URLs = append(r.URLs, u)
	}
	if l.Credentials != "" {
		if _, err := os.Stat(l.Credentials); err != nil {
			return nil, fmt.Errorf("embedded: leaf node credentials: %w", err)
		}
	}
	if useTLS {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12}
		if l.TLSCA != "" {
			pem, err := os.ReadFile(l.TLSCA)
			if err != nil {
				return nil, fmt.Errorf("embedded: leaf node TLS CA: %w", err)
			}
			cfg.RootCAs = x509.NewCertPool()
			if !cfg.RootCAs.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("embedded: leaf node TLS CA %s: no PEM certificate in it", l.TLSCA)
			}
		}
		if (l.TLSCert == "") != (l.TLSKey == "") {
			return nil, errors.New("embedded: leaf node TLS: a client certificate needs both the certificate and the key")
		}
		if l.TLSCert != "" {
			cert, err := tls.LoadX509KeyPair(l.TLSCert, l.TLSKey)
			if err != nil {
				return nil, fmt.Errorf("embedded: leaf node TLS client certificate: %w", err)
			}
			cfg.Certificates = []tls.Certificate{cert}
		}
		r.TLS, r.TLSConfig = true, cfg
	}
	return r, nil
}

// waitLeaf waits until the leaf link to the hub is up: until then nothing
// the relay asks JetStream can be answered.
func waitLeaf(ctx context.Context, ns *server.Server, timeout time.Duration) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for ns.NumLeafNodes() == 0 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("leaf node: %w", ctx.Err())
		case <-deadline.C:
			return fmt.Errorf("leaf node: no connection to the hub after %s", timeout)
		case <-tick.C:
		}
	}
	return nil
}

func redacted(urls []string) string {
	out := make([]string, len(urls))
	for i, u := range urls {
		out[i] = redactedURL(u)
	}
	return strings.Join(out, ",")
}

func redactedURL(s string) string {
	if u, err := url.Parse(s); err == nil {
		return u.Redacted()
	}
	return "(unparsable URL)"
}
