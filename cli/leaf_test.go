package cli

import (
	"reflect"
	"strings"
	"testing"

	"github.com/sserelay/sserelay/embedded"
)

// TestLeafOptions: the leaf flags, by argument or SSERELAY_ variable, become
// the embedded server's leaf settings, field by field; what cannot work is
// refused with the flag's name.
func TestLeafOptions(t *testing.T) {
	t.Run("set", testLeafOptionsSet)
	t.Run("refused", testLeafOptionsRefused)
}

func testLeafOptionsSet(t *testing.T) {
	t.Setenv("SSERELAY_LEAF_TLS_CA", "/etc/hub/ca.pem")
	cfg := parseServeFlags(t, "--leaf-remote", " nats-leaf://a:7422, tls://u:p@b:7422 ,",
		"--leaf-credentials", "/etc/hub/leaf.creds", "--leaf-tls-cert", "/etc/hub/c.pem", "--leaf-tls-key", "/etc/hub/k.pem")
	got, err := leafOptions(cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := &embedded.LeafOptions{
		URLs:        []string{"nats-leaf://a:7422", "tls://u:p@b:7422"},
		Credentials: "/etc/hub/leaf.creds",
		TLSCA:       "/etc/hub/ca.pem", TLSCert: "/etc/hub/c.pem", TLSKey: "/etc/hub/k.pem",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("leaf options\n got %+v\nwant %+v", got, want)
	}
}

func testLeafOptionsRefused(t *testing.T) {
	if l, err := leafOptions(parseServeFlags(t)); l != nil || err != nil {
		t.Errorf("without --leaf-remote: %+v, %v; want none", l, err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--leaf-remote", "nats-leaf://a:7422", "--nats-url", "nats://b:4222"}, "--nats-url"},
		{[]string{"--leaf-credentials", "x.creds"}, "--leaf-credentials needs --leaf-remote"},
		{[]string{"--leaf-tls-key", "k.pem"}, "--leaf-tls-key needs --leaf-remote"},
	} {
		if _, err := leafOptions(parseServeFlags(t, c.args...)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want one naming %s", c.args, err, c.want)
		}
	}
}
