package cli

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/urfave/cli/v2"
)

// natsConfig is how the relay (or publish) reaches an external NATS server:
// its URLs, one way to authenticate, TLS, and the JetStream domain.
type natsConfig struct {
	URL            string // comma-separated; empty for serve: the embedded server
	Creds          string // credentials file: user JWT and NKey seed
	NKey           string // NKey seed file
	User, Password string
	Token          string
	TLSCA          string // CAs of the server's certificate (empty: the system's)
	TLSCert        string // client certificate, with TLSKey
	TLSKey         string
	Domain         string // JetStream domain
}

// natsFlags binds n. The URL and the credentials file also fall back on
// NATS_URL and NATS_CREDS, the variables natscli and other NATS tools read.
func natsFlags(n *natsConfig, category, urlUsage string) []cli.Flag {
	u, creds := stringVar(&n.URL, category, "nats-url", urlUsage), stringVar(&n.Creds, category, "nats-creds", "NATS credentials file (user JWT and NKey seed)")
	u.EnvVars = append(u.EnvVars, "NATS_URL")
	creds.EnvVars = append(creds.EnvVars, "NATS_CREDS")
	return []cli.Flag{
		u, creds,
		stringVar(&n.NKey, category, "nats-nkey", "NATS NKey seed file"),
		stringVar(&n.User, category, "nats-user", "NATS user (with --nats-password)"),
		stringVar(&n.Password, category, "nats-password", "NATS password of --nats-user"),
		stringVar(&n.Token, category, "nats-token", "NATS authentication token"),
		stringVar(&n.TLSCA, category, "nats-tls-ca", "PEM file of the CAs of the NATS server's certificate (turns TLS on; default: the system's CAs)"),
		stringVar(&n.TLSCert, category, "nats-tls-cert", "PEM client certificate for NATS (with --nats-tls-key; turns TLS on)"),
		stringVar(&n.TLSKey, category, "nats-tls-key", "PEM key of --nats-tls-cert"),
		stringVar(&n.Domain, category, "js-domain", "JetStream domain (leaf-node setups)"),
	}
}

// authFlags lists the authentication and TLS flags that are set.
func (n natsConfig) authFlags() []string {
	var set []string
	for _, f := range []struct{ name, v string }{
		{"nats-creds", n.Creds}, {"nats-nkey", n.NKey}, {"nats-user", n.User}, {"nats-password", n.Password},
		{"nats-token", n.Token}, {"nats-tls-ca", n.TLSCA}, {"nats-tls-cert", n.TLSCert}, {"nats-tls-key", n.TLSKey},
	} {
		if f.v != "" {
			set = append(set, "--"+f.name)
		}
	}
	return set
}

// check reports flags that contradict each other.
func (n natsConfig) check() error {
	methods := countSet(n.Creds, n.NKey, n.User+n.Password, n.Token)
	switch {
	case methods > 1:
		return errors.New("--nats-creds, --nats-nkey, --nats-user/--nats-password and --nats-token are alternatives: set one")
	case (n.User == "") != (n.Password == ""):
		return errors.New("--nats-user and --nats-password go together")
	case (n.TLSCert == "") != (n.TLSKey == ""):
		return errors.New("--nats-tls-cert and --nats-tls-key go together")
	}
	if msg := checkNATSURLs(n.URL); msg != "" {
		return fmt.Errorf("--nats-url %s: %s", show(n.URL), msg)
	}
	return nil
}

// options returns the connection options of n's authentication and TLS,
// each tried once here so that a missing or bad file fails with its flag's
// name before any connection is attempted.
func (n natsConfig) options() ([]nats.Option, error) {
	type opt struct {
		flag string
		o    nats.Option
	}
	var opts []opt
	if n.Creds != "" {
		opts = append(opts, opt{"--nats-creds " + n.Creds, nats.UserCredentials(n.Creds)})
	}
	if n.NKey != "" {
		o, err := nats.NkeyOptionFromSeed(n.NKey)
		if err != nil {
			return nil, fmt.Errorf("--nats-nkey %s: %w", n.NKey, err)
		}
		opts = append(opts, opt{"--nats-nkey", o})
	}
	if n.User != "" {
		opts = append(opts, opt{"--nats-user", nats.UserInfo(n.User, n.Password)})
	}
	if n.Token != "" {
		opts = append(opts, opt{"--nats-token", nats.Token(n.Token)})
	}
	if n.TLSCA != "" {
		opts = append(opts, opt{"--nats-tls-ca " + n.TLSCA, nats.RootCAs(n.TLSCA)})
	}
	if n.TLSCert != "" {
		opts = append(opts, opt{"--nats-tls-cert " + n.TLSCert + ", --nats-tls-key " + n.TLSKey, nats.ClientCert(n.TLSCert, n.TLSKey)})
	}
	probe := nats.GetDefaultOptions()
	out := make([]nats.Option, 0, len(opts))
	for _, o := range opts {
		if err := o.o(&probe); err != nil {
			return nil, fmt.Errorf("%s: %w", o.flag, err)
		}
		out = append(out, o.o)
	}
	if n.Creds != "" {
		// UserCredentials reads the file only when it connects.
		b, err := os.ReadFile(n.Creds)
		if err == nil && !bytes.Contains(b, []byte("BEGIN NATS USER JWT")) {
			err = errors.New("not a NATS credentials file (no user JWT)")
		}
		if err != nil {
			return nil, fmt.Errorf("--nats-creds %s: %w", n.Creds, err)
		}
	}
	return out, nil
}

// redactedURLs is the URL list without passwords, for logs and errors.
func redactedURLs(s string) string {
	var out []string
	for raw := range strings.SplitSeq(s, ",") {
		raw = strings.TrimSpace(raw)
		if u, err := url.Parse(raw); err == nil && strings.Contains(raw, "://") {
			raw = u.Redacted()
		} else if i := strings.LastIndex(raw, "@"); i >= 0 {
			raw = "xxxxx" + raw[i:]
		}
		out = append(out, raw)
	}
	return strings.Join(out, ",")
}

// Reconnect back-off: after every server of the list failed, wait
// reconnectBase doubling up to reconnectMax, with up to a quarter more as
// jitter so that many relays do not come back in step. Attempts never stop.
const (
	reconnectBase = 250 * time.Millisecond
	reconnectMax  = 8 * time.Second
)

func reconnectDelay(attempts int) time.Duration {
	d := reconnectMax
	if attempts < 6 {
		d = min(reconnectBase<<max(attempts-1, 0), reconnectMax)
	}
	return d + rand.N(d/4+1)
}
