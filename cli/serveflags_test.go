package cli

import (
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/sserelay/sserelay/relay"
)

// parseServeFlags parses args and the environment into a new default
// configuration with the flags of serve, without running it.
func parseServeFlags(t *testing.T, args ...string) *serveConfig {
	t.Helper()
	cfg, _ := parseServe(t, args...)
	return cfg
}

// parseServe is parseServeFlags that also returns the flags.
func parseServe(t *testing.T, args ...string) (*serveConfig, []cli.Flag) {
	t.Helper()
	cfg := newServeConfig()
	flags := serveFlags(cfg)
	app := &cli.App{
		Name: "sserelay", Writer: io.Discard, ErrWriter: io.Discard,
		Commands: []*cli.Command{{
			Name: "serve", Flags: flags,
			Action:       func(*cli.Context) error { return nil },
			OnUsageError: func(_ *cli.Context, err error, _ bool) error { return err },
		}},
	}
	if err := app.Run(append([]string{"sserelay", "serve"}, args...)); err != nil {
		t.Fatalf("serve %q: %v", args, err)
	}
	return cfg, flags
}

// otherValue returns a value for flag f that differs from its default.
func otherValue(t *testing.T, f cli.Flag) string {
	switch f := f.(type) {
	case *cli.StringFlag:
		return f.Value + "x"
	case *cli.DurationFlag:
		return (f.Value + time.Second).String()
	case *cli.IntFlag:
		return fmt.Sprint(f.Value + 1)
	case *cli.Int64Flag:
		return fmt.Sprint(f.Value + 1)
	case *cli.Float64Flag:
		return fmt.Sprint(f.Value + 1)
	case *cli.BoolFlag:
		return fmt.Sprint(!f.Value)
	}
	t.Fatalf("flag %s: unexpected type %T", f.Names()[0], f)
	return ""
}

// TestServeFlagsBound: every flag of serve has its SSERELAY_ variable and a
// category, and setting it, by argument or by variable, changes the
// configuration (a flag bound to nothing, or read back under a misspelt
// name, would leave it at its defaults).
func TestServeFlagsBound(t *testing.T) {
	def := newServeConfig()
	seen := map[string]bool{}
	for _, f := range serveFlags(newServeConfig()) {
		name := f.Names()[0]
		if seen[name] {
			t.Errorf("--%s declared twice", name)
		}
		seen[name] = true
		d := f.(cli.DocGenerationFlag)
		want := []string{"SSERELAY_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))}
		if fb := natsFallbacks[name]; fb != "" {
			want = append(want, fb)
		}
		if !reflect.DeepEqual(d.GetEnvVars(), want) {
			t.Errorf("--%s: environment variables %q, want %q", name, d.GetEnvVars(), want)
		}
		if f.(cli.CategorizableFlag).GetCategory() == "" {
			t.Errorf("--%s has no category", name)
		}
		v := otherValue(t, f)
		if cfg := parseServeFlags(t, "--"+name+"="+v); reflect.DeepEqual(cfg, def) {
			t.Errorf("--%s=%s left the configuration at its defaults", name, v)
		}
		t.Run(name, func(t *testing.T) {
			t.Setenv(d.GetEnvVars()[0], v)
			if cfg := parseServeFlags(t); reflect.DeepEqual(cfg, def) {
				t.Errorf("%s=%s left the configuration at its defaults", d.GetEnvVars()[0], v)
			}
		})
	}
	if len(seen) < 40 {
		t.Errorf("only %d flags", len(seen))
	}
}

// natsFallbacks are the variables of other NATS tools that serve reads
// after its own.
var natsFallbacks = map[string]string{"nats-url": "NATS_URL", "nats-creds": "NATS_CREDS"}

func TestNATSEnvFallbacks(t *testing.T) {
	t.Setenv("NATS_URL", "nats://fallback:4222")
	t.Setenv("NATS_CREDS", "/fallback.creds")
	if cfg := parseServeFlags(t); cfg.NATS.URL != "nats://fallback:4222" || cfg.NATS.Creds != "/fallback.creds" {
		t.Errorf("NATS_URL and NATS_CREDS alone: url %q creds %q", cfg.NATS.URL, cfg.NATS.Creds)
	}
	t.Setenv("SSERELAY_NATS_URL", "nats://own:4222")
	if cfg := parseServeFlags(t); cfg.NATS.URL != "nats://own:4222" {
		t.Errorf("with SSERELAY_NATS_URL too: url %q, want SSERELAY_NATS_URL's", cfg.NATS.URL)
	}
	if cfg := parseServeFlags(t, "--nats-url", "nats://flag:4222"); cfg.NATS.URL != "nats://flag:4222" {
		t.Errorf("with --nats-url: url %q, want the flag's", cfg.NATS.URL)
	}
}

// TestServeFlagsDefaults: the relay's defaults are relay.DefaultConfig's
// (but for the token leeway, which the library leaves to its verifier), and
// flags land in the fields they name.
func TestServeFlagsDefaults(t *testing.T) {
	cfg := parseServeFlags(t)
	want := relay.DefaultConfig()
	want.TokenLeeway = defaultLeeway
	if !reflect.DeepEqual(cfg.Relay, want) || !reflect.DeepEqual(cfg.Stream, relay.DefaultStreamOptions()) {
		t.Errorf("defaults: relay %+v, stream %+v", cfg.Relay, cfg.Stream)
	}
	cfg = parseServeFlags(t, "--keepalive", "3s", "--retry=7s", "--queue-events", "12", "--retention-max-bytes", "-1",
		"--stream", "EV", "--subject-prefix", "ev", "--nats-url", "nats://a:1,nats://b:2", "--no-demo", "--epoch-ids=false",
		"--listen", ":9", "--log-format", "json")
	r := cfg.Relay
	if r.Keepalive != 3*time.Second || r.Retry != 7*time.Second || r.QueueEvents != 12 || cfg.Stream.MaxBytes != -1 ||
		r.Stream != "EV" || r.SubjectPrefix != "ev" || cfg.NATS.URL != "nats://a:1,nats://b:2" || !r.NoDemo || cfg.EpochIDs ||
		cfg.HTTP.Listen != ":9" || cfg.Log.Format != "json" {
		t.Errorf("parsed: %+v", cfg)
	}
	if r.WriteTimeout != relay.DefaultConfig().WriteTimeout {
		t.Errorf("write timeout %v, want the default", r.WriteTimeout)
	}
}

// TestEveryFlagHasEnv: every flag of every command, not only serve's, can
// be set by its SSERELAY_ variable (DESIGN.md: every flag also an
// environment variable).
func TestEveryFlagHasEnv(t *testing.T) {
	for _, c := range NewApp().Commands {
		for _, f := range c.Flags {
			name := f.Names()[0]
			want := "SSERELAY_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
			d, ok := f.(cli.DocGenerationFlag)
			if !ok || !slices.Contains(d.GetEnvVars(), want) {
				t.Errorf("%s --%s: no %s", c.Name, name, want)
			}
		}
	}
}
