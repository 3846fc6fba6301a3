package cli

import (
	"errors"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/sserelay/sserelay/embedded"
)

// leafFlags make the embedded server a leaf node of a hub cluster (the
// leaf-node sidecar: every pod's app publishes to its own 127.0.0.1:4222,
// the stream lives in the hub, every pod's relay reads it).
func leafFlags() []cli.Flag {
	return []cli.Flag{
		strFlag("leaf-remote", "", "hub's leaf node URL(s), comma-separated (nats-leaf://host:7422): the embedded server becomes a leaf node with no store of its own; set --js-domain to the hub's JetStream domain"),
		strFlag("leaf-credentials", "", "NATS credentials file for the leaf node connection"),
		strFlag("leaf-tls-ca", "", "PEM file of the CAs of the hub's leaf node certificate (turns TLS on)"),
		strFlag("leaf-tls-cert", "", "PEM client certificate for the leaf node connection (with --leaf-tls-key)"),
		strFlag("leaf-tls-key", "", "PEM key of --leaf-tls-cert"),
	}
}

// leafOptions returns the leaf node settings, or nil without --leaf-remote.
func leafOptions(c *cli.Context) (*embedded.LeafOptions, error) {
	remote := c.String("leaf-remote")
	if remote == "" {
		for _, f := range []string{"leaf-credentials", "leaf-tls-ca", "leaf-tls-cert", "leaf-tls-key"} {
			if c.String(f) != "" {
				return nil, errors.New("--" + f + " needs --leaf-remote")
			}
		}
		return nil, nil
	}
	if c.String("nats-url") != "" {
		return nil, errors.New("--leaf-remote makes the embedded server a leaf node: it cannot be used with --nats-url")
	}
	l := &embedded.LeafOptions{
		Credentials: c.String("leaf-credentials"),
		TLSCA:       c.String("leaf-tls-ca"), TLSCert: c.String("leaf-tls-cert"), TLSKey: c.String("leaf-tls-key"),
	}
	for u := range strings.SplitSeq(remote, ",") {
		if u = strings.TrimSpace(u); u != "" {
			l.URLs = append(l.URLs, u)
		}
	}
	return l, nil
}
