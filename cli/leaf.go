package cli

import (
	"errors"

	"github.com/urfave/cli/v2"

	"github.com/sserelay/sserelay/embedded"
)

const catLeaf = "Leaf node (embedded server)"

// leafConfig makes the embedded server a leaf node of a hub cluster (the
// leaf-node sidecar: every pod's app publishes to its own 127.0.0.1:4222,
// the stream lives in the hub, every pod's relay reads it).
type leafConfig struct {
	Remote, Credentials, TLSCA, TLSCert, TLSKey string
}

func leafFlags(l *leafConfig) []cli.Flag {
	return []cli.Flag{
		stringVar(&l.Remote, catLeaf, "leaf-remote", "hub's leaf node URL(s), comma-separated (nats-leaf://host:7422): the embedded server becomes a leaf node with no store of its own; set --js-domain to the hub's JetStream domain"),
		stringVar(&l.Credentials, catLeaf, "leaf-credentials", "NATS credentials file for the leaf node connection"),
		stringVar(&l.TLSCA, catLeaf, "leaf-tls-ca", "PEM file of the CAs of the hub's leaf node certificate (turns TLS on)"),
		stringVar(&l.TLSCert, catLeaf, "leaf-tls-cert", "PEM client certificate for the leaf node connection (with --leaf-tls-key)"),
		stringVar(&l.TLSKey, catLeaf, "leaf-tls-key", "PEM key of --leaf-tls-cert"),
	}
}

// leafOptions returns the leaf node settings, or nil without --leaf-remote.
func leafOptions(cfg *serveConfig) (*embedded.LeafOptions, error) {
	lc := cfg.Leaf
	if lc.Remote == "" {
		for _, f := range []struct{ name, value string }{
			{"leaf-credentials", lc.Credentials}, {"leaf-tls-ca", lc.TLSCA}, {"leaf-tls-cert", lc.TLSCert}, {"leaf-tls-key", lc.TLSKey},
		} {
			if f.value != "" {
				return nil, errors.New("--" + f.name + " needs --leaf-remote")
			}
		}
		return nil, nil
	}
	if cfg.NATS.URL != "" {
		return nil, errors.New("--leaf-remote makes the embedded server a leaf node: it cannot be used with --nats-url")
	}
	return &embedded.LeafOptions{
		URLs:        splitList(lc.Remote),
		Credentials: lc.Credentials, TLSCA: lc.TLSCA, TLSCert: lc.TLSCert, TLSKey: lc.TLSKey,
	}, nil
}
