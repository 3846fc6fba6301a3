package k8s_test

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	ucli "github.com/urfave/cli/v2"
	corev1 "k8s.io/api/core/v1"

	"github.com/sserelay/sserelay/cli"
)

// exitMargin is the time the relay may take past its drain timeout to exit ("a few seconds").
const exitMargin = 5 * time.Second

// serveFlag is a flag of `sserelay serve`, as the CLI itself declares it.
type serveFlag struct {
	name    string
	env     []string
	boolean bool   // takes no value
	def     string // default value
}

// serveFlags are the flags of `sserelay serve` by name, and by environment variable, taken from the CLI so that a
// flag serve gains is known here at once and a flag it loses fails the manifests that still set it.
var serveFlags = sync.OnceValues(func() (byName, byEnv map[string]serveFlag) {
	byName, byEnv = map[string]serveFlag{}, map[string]serveFlag{}
	for _, f := range cli.ServeFlags() {
		sf := serveFlag{name: f.Names()[0]}
		if d, ok := f.(ucli.DocGenerationFlag); ok {
			sf.env, sf.def = d.GetEnvVars(), d.GetValue()
		}
		switch f := f.(type) {
		case *ucli.BoolFlag:
			sf.boolean, sf.def = true, fmt.Sprint(f.Value)
		case *ucli.StringFlag:
			sf.def = f.Value // GetValue quotes it
		}
		byName[sf.name] = sf
		for _, e := range sf.env {
			byEnv[e] = sf
		}
	}
	return byName, byEnv
})

// serveDefault returns the default of a flag of `sserelay serve`.
func serveDefault(t *testing.T, name string) string {
	t.Helper()
	byName, _ := serveFlags()
	f, ok := byName[name]
	if !ok {
		t.Fatalf("sserelay serve has no flag --%s", name)
	}
	return f.def
}

// TestServeFlagsFromCLI guards the derivation: it must find the contract's flags with their variables, bool
// flags as such, and the defaults the checks rely on.
func TestServeFlagsFromCLI(t *testing.T) {
	byName, byEnv := serveFlags()
	for _, name := range []string{"listen", "nats-url", "data-dir", "drain-timeout", "nats-listen", "jwt-secret", "subject-prefix", "stream", "log-format"} {
		f, ok := byName[name]
		want := "SSERELAY_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
		if !ok || !slices.Contains(f.env, want) || byEnv[want].name != name {
			t.Errorf("--%s: found %v, env %q; want the flag with env %s", name, ok, f.env, want)
		}
	}
	if !byName["no-demo"].boolean || byName["listen"].boolean {
		t.Error("no-demo must be a bool flag and listen not")
	}
	if d, err := time.ParseDuration(serveDefault(t, "drain-timeout")); err != nil || d <= 0 {
		t.Errorf("drain-timeout default %q: %v", serveDefault(t, "drain-timeout"), err)
	}
	if got := serveDefault(t, "nats-listen"); got != "127.0.0.1:4222" {
		t.Errorf("nats-listen default %q", got)
	}
}

// parseServe runs all of the checks of `sserelay serve` (cli.CheckServe) on a relay container's args and
// environment, so that a value serve would refuse at start-up (a duration without a unit, a negative limit, an
// address that is not host:port, flags that contradict each other) fails here. Variables from a Secret or a field
// reference get a placeholder: their values are not in the manifests.
func parseServe(t *testing.T, where string, c *corev1.Container) {
	t.Helper()
	if len(c.Args) == 0 || c.Args[0] != "serve" {
		return // relayConfig reports it
	}
	t.Run(where, func(t *testing.T) { // a subtest: its Setenv ends with it
		_, byEnv := serveFlags()
		for _, e := range c.Env {
			if _, ok := byEnv[e.Name]; !ok {
				continue
			}
			v := e.Value
			if e.ValueFrom != nil {
				v = "from-" + e.Name
			}
			t.Setenv(e.Name, v)
		}
		if err := cli.CheckServe(c.Args[1:]); err != nil {
			t.Errorf("sserelay serve %q (and its SSERELAY_ variables) would not start: %v", c.Args[1:], err)
		}
	})
}
