package cli

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/sserelay/sserelay/relay"
)

// ExitUsage is the exit status of a command given a flag that means
// nothing (and of flags that do not parse): the convention of sh and
// getopt. Other failures exit 1.
const ExitUsage = 2

// usageError is a configuration error; main exits with ExitUsage.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }
func (e usageError) ExitCode() int { return ExitUsage }

// usage makes err a usage error (flags that do not parse, for one), with
// flags spelt as they are given.
func usage(_ *cli.Context, err error, _ bool) error {
	msg := strings.Replace(err.Error(), "for flag -", "for flag --", 1)
	msg = strings.Replace(msg, "not defined: -", "not defined: --", 1)
	return usageError{errors.New(msg)}
}

// CheckServe parses args (what follows "sserelay serve") and the
// environment as `sserelay serve` does and runs all of its checks, without
// starting anything: for tests of deployment manifests and scripts. The
// error is what serve would print before exiting with ExitUsage.
func CheckServe(args []string) error {
	cfg := newServeConfig()
	flags := serveFlags(cfg)
	app := &cli.App{
		Name: "sserelay", Writer: io.Discard, ErrWriter: io.Discard, ExitErrHandler: func(*cli.Context, error) {},
		Commands: []*cli.Command{{
			Name: "serve", Flags: flags, OnUsageError: usage,
			Action: func(*cli.Context) error { return validate(cfg, flags) },
		}},
	}
	return app.Run(append([]string{"sserelay", "serve"}, args...))
}

// zeroMeans names the flags whose 0 means something of its own, though
// their default is not 0, and what.
var zeroMeans = map[string]string{"jwt-leeway": "no clock skew allowed"}

// validate checks every flag of serve before anything starts, and names the
// first bad one: zero or empty where the flag's default is not (it would
// mean nothing, or silently the default), then the relay's and the
// stream's own checks, then what only the CLI knows (addresses, formats).
//
// A flag's default is read from flags made afresh: urfave/cli stores a
// value from the environment in the flag's Value field, so the flags given
// here hold the variable's value there, not the default. An error about a
// flag set through its variable names the variable too.
func validate(cfg *serveConfig, flags []cli.Flag) error {
	defaults := map[string]reflect.Value{}
	for _, f := range serveFlags(newServeConfig()) {
		defaults[f.Names()[0]] = flagDefault(f)
	}
	byName := map[string]cli.Flag{}
	for _, f := range flags {
		byName[f.Names()[0]] = f
	}
	for _, f := range flags {
		dest, def := flagDest(f), defaults[f.Names()[0]]
		if !def.IsValid() {
			def = flagDefault(f) // a flag serve has not: its Value is the best guess
		}
		if dest.Kind() == reflect.Bool || def.IsZero() || !dest.IsZero() || zeroMeans[f.Names()[0]] != "" {
			continue
		}
		what := "0"
		if dest.Kind() == reflect.String {
			what = "empty"
		}
		hint := ""
		if f.Names()[0] == "nats-listen" {
			hint = "; off turns the listener off"
		}
		return fromEnv(f, fmt.Errorf("--%s must not be %s (default %v%s)", f.Names()[0], what, def, hint))
	}

	rc := cfg.Relay
	rc.AllowedOrigins = cfg.HTTP.origins()
	rc.TrustedProxies = splitList(cfg.HTTP.TrustedProxies)
	rc.JetStreamDomain = cfg.NATS.Domain
	if err := rc.Validate(); err != nil {
		return flagError(err, &cfg.Relay, flags, map[string]string{"AllowedOrigins": "cors-origins", "TrustedProxies": "trusted-proxies", "JetStreamDomain": "js-domain"})
	}
	so := cfg.Stream
	so.Name, so.SubjectPrefix = cfg.Relay.Stream, cfg.Relay.SubjectPrefix
	if err := so.Validate(); err != nil {
		return flagError(err, &cfg.Stream, flags, map[string]string{"Name": "stream", "SubjectPrefix": "subject-prefix"})
	}

	checks := []struct {
		flag  string
		value any
		err   string
	}{
		{"listen", cfg.HTTP.Listen, checkAddr(cfg.HTTP.Listen)},
		{"nats-listen", cfg.Embedded.Listen, checkAddrOr(cfg.Embedded.Listen, "off")},
		{"metrics-listen", cfg.Metrics.Listen, checkAddrOr(cfg.Metrics.Listen, "")},
		{"store-sync", cfg.Embedded.StoreSync, checkStoreSync(cfg.Embedded)},
		{"server-name", cfg.Embedded.ServerName, noSpace(cfg.Embedded.ServerName)},
		{"log-format", cfg.Log.Format, oneOf(cfg.Log.Format, "text", "json")},
		{"log-level", cfg.Log.Level, checkLevel(cfg.Log.Level)},
		{"drain-timeout", cfg.DrainTimeout, atLeast(cfg.DrainTimeout, relay.MinTimeout)},
		{"start-timeout", cfg.StartTimeout, atLeast(cfg.StartTimeout, relay.MinTimeout)},
		{"read-header-timeout", cfg.HTTP.ReadHeaderTimeout, atLeast(cfg.HTTP.ReadHeaderTimeout, relay.MinTimeout)},
		{"max-header-bytes", cfg.HTTP.MaxHeaderBytes, positive(cfg.HTTP.MaxHeaderBytes)},
	}
	for _, c := range checks {
		if c.err != "" {
			return fromEnv(byName[c.flag], fmt.Errorf("--%s %s: %s", c.flag, show(c.value), c.err))
		}
	}
	switch t := cfg.Tokens; countSet(t.Secret, t.PublicKeyFile, t.JWKSURL) {
	case 0:
		return errors.New("no key to verify tokens with: set --jwt-secret, --jwt-public-key or --jwks-url")
	case 1:
	default:
		return errors.New("--jwt-secret, --jwt-public-key and --jwks-url are alternatives: set one")
	}
	if (cfg.HTTP.TLSCert == "") != (cfg.HTTP.TLSKey == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	if set := cfg.NATS.authFlags(); cfg.NATS.URL == "" && len(set) > 0 {
		return fmt.Errorf("%s needs --nats-url: the embedded server takes no credentials", set[0])
	}
	if err := cfg.NATS.check(); err != nil {
		return err
	}
	if err := cfg.Metrics.check(); err != nil {
		return err
	}
	if _, err := leafOptions(cfg); err != nil {
		return err
	}
	return nil
}

// flagError names the flag bound to the field a *relay.ConfigError is
// about: the flag whose Destination is that field of st (a pointer to a
// relay.Config or relay.StreamOptions), or the one named in unbound.
func flagError(err error, st any, flags []cli.Flag, unbound map[string]string) error {
	var ce *relay.ConfigError
	if !errors.As(err, &ce) {
		return err
	}
	name := unbound[ce.Field]
	if field := reflect.ValueOf(st).Elem().FieldByName(ce.Field); name == "" && field.IsValid() {
		for _, f := range flags {
			if d := flagDest(f); d.Type() == field.Type() && d.Addr().Pointer() == field.Addr().Pointer() {
				name = f.Names()[0]
			}
		}
	}
	if name == "" {
		return err // a field no flag sets
	}
	var flag cli.Flag
	for _, f := range flags {
		if f.Names()[0] == name {
			flag = f
		}
	}
	return fromEnv(flag, fmt.Errorf("--%s %s: %s", name, show(ce.Value), ce.Reason))
}

// fromEnv prefixes err, which is about flag f, with the environment
// variable that set f, if one did: a user who never typed the flag then
// sees where the value came from. urfave/cli marks a flag set from the
// environment as set and keeps the variable's value in its Value field; a
// command-line value, which overrides it, is only in the destination.
func fromEnv(f cli.Flag, err error) error {
	ef, ok := f.(interface{ GetEnvVars() []string })
	if !ok || !f.IsSet() || !reflect.DeepEqual(flagDest(f).Interface(), flagDefault(f).Interface()) {
		return err
	}
	for _, v := range ef.GetEnvVars() {
		if _, set := os.LookupEnv(v); set {
			return fmt.Errorf("%s: %w", v, err)
		}
	}
	return err
}

// flagDest is the variable a bound flag sets; flagDefault its Value field:
// its default until urfave/cli applies the environment, then the
// variable's value.
func flagDest(f cli.Flag) reflect.Value {
	switch f := f.(type) {
	case *cli.StringFlag:
		return reflect.ValueOf(f.Destination).Elem()
	case *cli.DurationFlag:
		return reflect.ValueOf(f.Destination).Elem()
	case *cli.IntFlag:
		return reflect.ValueOf(f.Destination).Elem()
	case *cli.Int64Flag:
		return reflect.ValueOf(f.Destination).Elem()
	case *cli.Float64Flag:
		return reflect.ValueOf(f.Destination).Elem()
	case *cli.BoolFlag:
		return reflect.ValueOf(f.Destination).Elem()
	}
	panic(fmt.Sprintf("flag %s: unbound type %T", f.Names()[0], f))
}

func flagDefault(f cli.Flag) reflect.Value {
	return reflect.ValueOf(f).Elem().FieldByName("Value")
}

func show(v any) string {
	if s, ok := v.(string); ok {
		return strconv.Quote(s)
	}
	return fmt.Sprint(v)
}

func countSet(s ...string) int {
	n := 0
	for _, v := range s {
		if v != "" {
			n++
		}
	}
	return n
}

func checkAddr(a string) string {
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return "want host:port, e.g. 127.0.0.1:8080 or :8080"
	}
	if strings.ContainsAny(host, " \t") {
		return "the host contains whitespace"
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return "the port is not a number from 0 to 65535"
	}
	return ""
}

func checkAddrOr(a, special string) string {
	if a == special {
		return ""
	}
	if err := checkAddr(a); err != "" {
		if special == "" {
			return err + ", or empty"
		}
		return err + ", or " + special
	}
	return ""
}

// checkNATSURLs checks --nats-url the way nats.go reads it: comma-separated
// URLs, the scheme optional.
func checkNATSURLs(s string) string {
	if s == "" {
		return ""
	}
	for raw := range strings.SplitSeq(s, ",") {
		raw = strings.TrimSpace(raw)
		if !strings.Contains(raw, "://") {
			raw = "nats://" + raw
		}
		u, err := url.Parse(raw)
		switch {
		case err != nil:
			return err.Error()
		case !slices.Contains([]string{"nats", "tls", "ws", "wss"}, u.Scheme):
			return fmt.Sprintf("scheme %q: want nats://, tls://, ws:// or wss://", u.Scheme)
		case u.Hostname() == "":
			return fmt.Sprintf("%q has no host", raw)
		}
		if p := u.Port(); p != "" {
			if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
				return fmt.Sprintf("%q: the port is not a number from 1 to 65535", raw)
			}
		}
	}
	return ""
}

func checkStoreSync(ec embeddedConfig) string {
	if _, _, ok := ec.storeSync(); !ok {
		return "want a positive duration, or always"
	}
	return ""
}

func checkLevel(s string) string {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return "want debug, info, warn or error"
	}
	return ""
}

func noSpace(s string) string {
	if strings.ContainsFunc(s, func(r rune) bool { return r <= ' ' || r == 0x7f }) {
		return "must not contain whitespace or control characters"
	}
	return ""
}

func oneOf(s string, ok ...string) string {
	if slices.Contains(ok, s) {
		return ""
	}
	return "want " + strings.Join(ok, " or ")
}

func atLeast(d, floor time.Duration) string {
	if d < floor {
		return fmt.Sprintf("want at least %v", floor)
	}
	return ""
}

func positive(n int) string {
	if n < 1 {
		return "must be positive"
	}
	return ""
}
