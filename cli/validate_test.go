package cli

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// badServeFlags are flags serve must refuse before it starts anything, with
// what the message must say. Each names the flag.
var badServeFlags = []struct {
	args []string
	want string
}{
	{[]string{"--retry", "-1ms"}, "--retry -1ms"},
	{[]string{"--retry", "3h"}, "--retry 3h0m0s"},
	{[]string{"--keepalive", "-1ms"}, "--keepalive -1ms"},
	{[]string{"--keepalive", "0"}, "--keepalive must not be 0"},
	{[]string{"--keepalive", "1us"}, "--keepalive 1µs"},
	{[]string{"--keepalive", "15"}, "--keepalive"}, // no unit: does not parse
	{[]string{"--write-timeout", "-1s"}, "--write-timeout -1s"},
	{[]string{"--publish-timeout", "0s"}, "--publish-timeout must not be 0"},
	{[]string{"--drain-timeout", "-5s"}, "--drain-timeout -5s"},
	{[]string{"--start-timeout", "5ms"}, "--start-timeout 5ms"},
	{[]string{"--read-header-timeout", "0"}, "--read-header-timeout must not be 0"},
	{[]string{"--max-header-bytes", "-1"}, "--max-header-bytes -1"},
	{[]string{"--queue-events", "-1"}, "--queue-events -1"},
	{[]string{"--queue-bytes", "0"}, "--queue-bytes must not be 0"},
	{[]string{"--replay-batch", "-3"}, "--replay-batch -3"},
	{[]string{"--request-timeout", "0s"}, "--request-timeout must not be 0"},
	{[]string{"--replay-bytes", "-1"}, "--replay-bytes -1"},
	{[]string{"--max-replays", "0"}, "--max-replays must not be 0"},
	{[]string{"--ring-events", "0"}, "--ring-events must not be 0"},
	{[]string{"--ring-events", "-2"}, "--ring-events -2"},
	{[]string{"--ring-bytes", "-1"}, "--ring-bytes -1"},
	{[]string{"--max-streams", "-1"}, "--max-streams -1"},
	{[]string{"--max-feeds", "-1"}, "--max-feeds -1"},
	{[]string{"--max-topics", "0"}, "--max-topics must not be 0"},
	{[]string{"--poll-page", "-1"}, "--poll-page -1"},
	{[]string{"--max-publish-bytes", "-1"}, "--max-publish-bytes -1"},
	{[]string{"--publish-window", "-1"}, "--publish-window -1"},
	{[]string{"--token-cache", "-5"}, "--token-cache -5"},
	{[]string{"--stream", "a.b"}, `--stream "a.b"`},
	{[]string{"--stream", ""}, "--stream must not be empty"},
	{[]string{"--subject-prefix", "sse.*"}, `--subject-prefix "sse.*"`},
	{[]string{"--stream-replicas", "6"}, "--stream-replicas 6"},
	{[]string{"--retention-max-age", "-1h"}, "--retention-max-age -1h0m0s"},
	{[]string{"--retention-max-bytes", "-2"}, "--retention-max-bytes -2"},
	{[]string{"--retention-max-msgs", "0"}, "--retention-max-msgs must not be 0"},
	{[]string{"--duplicate-window", "-1m"}, "--duplicate-window -1m0s"},
	{[]string{"--cors-origins", "example.com"}, `--cors-origins "example.com"`},
	{[]string{"--cors-origins", "https://a.example/path"}, `--cors-origins "https://a.example/path"`},
	{[]string{"--listen", "8080"}, `--listen "8080"`},
	{[]string{"--listen", "127.0.0.1:99999"}, `--listen "127.0.0.1:99999"`},
	{[]string{"--nats-listen", ""}, "--nats-listen must not be empty"},
	{[]string{"--nats-listen", "localhost"}, `--nats-listen "localhost"`},
	{[]string{"--metrics-listen", "9090"}, `--metrics-listen "9090"`},
	{[]string{"--metrics-pprof"}, "--metrics-pprof needs --metrics-listen"},
	{[]string{"--tls-cert", "c.pem"}, "--tls-cert and --tls-key go together"},
	{[]string{"--nats-url", "http://nats:4222"}, `--nats-url "http://nats:4222"`},
	{[]string{"--nats-url", "nats://a:1,nats://:2"}, "--nats-url"},
	{[]string{"--nats-user", "u"}, "--nats-user needs --nats-url"},
	{[]string{"--nats-tls-ca", "ca.pem"}, "--nats-tls-ca needs --nats-url"},
	{[]string{"--nats-url", "nats://n:4222", "--nats-user", "u"}, "--nats-user and --nats-password go together"},
	{[]string{"--nats-url", "nats://n:4222", "--nats-token", "t", "--nats-creds", "c"}, "are alternatives"},
	{[]string{"--nats-url", "nats://n:4222", "--nats-tls-key", "k.pem"}, "--nats-tls-cert and --nats-tls-key go together"},
	{[]string{"--js-domain", "a b"}, `--js-domain "a b"`},
	{[]string{"--store-sync", "0s"}, `--store-sync "0s"`},
	{[]string{"--store-sync", "sometimes"}, `--store-sync "sometimes"`},
	{[]string{"--server-name", "my server"}, `--server-name "my server"`},
	{[]string{"--data-dir", ""}, "--data-dir must not be empty"},
	{[]string{"--log-format", "xml"}, `--log-format "xml"`},
	{[]string{"--log-level", "loud"}, `--log-level "loud"`},
	{[]string{"--leaf-credentials", "x.creds"}, "--leaf-credentials needs --leaf-remote"},
	{[]string{"--jwks-url", "https://keys.example/jwks.json"}, "are alternatives"},
	{[]string{"--no-such-flag"}, "no-such-flag"},
	{[]string{"--cors-origins", "null"}, `--cors-origins "null"`},
	{[]string{"--body-timeout", "-1s"}, "--body-timeout -1s"},
	{[]string{"--max-connections", "-2"}, "--max-connections -2"},
	{[]string{"--poll-page-bytes", "0"}, "--poll-page-bytes must not be 0"},
	{[]string{"--max-streams-per-user", "-3"}, "--max-streams-per-user -3"},
	{[]string{"--user-stream-rate", "-2"}, "--user-stream-rate -2"},
	{[]string{"--user-stream-burst", "0"}, "--user-stream-burst must not be 0"},
	{[]string{"--ip-stream-rate", "0"}, "--ip-stream-rate must not be 0"},
	{[]string{"--publish-rate", "-0.5"}, "--publish-rate -0.5"},
	{[]string{"--max-replays-per-user", "-1"}, "--max-replays-per-user -1"},
	{[]string{"--limiter-keys", "-1"}, "--limiter-keys -1"},
	{[]string{"--trusted-proxies", "10.0.0.0/33"}, `--trusted-proxies`},
}

// TestServeRefusesBadFlags runs the real command line in-process with each
// bad flag: it must fail with ExitUsage and a message naming the flag,
// before it starts anything (no data directory appears).
func TestServeRefusesBadFlags(t *testing.T) {
	for _, tc := range badServeFlags {
		dataDir := filepath.Join(t.TempDir(), "data")
		args := []string{"sserelay", "serve", "--jwt-secret", "s", "--data-dir", dataDir, "--listen", "127.0.0.1:0", "--nats-listen", "off"}
		var stderr bytes.Buffer
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second) // ends a serve that started
		code := Main(ctx, append(args, tc.args...), &stderr)
		cancel()
		msg := stderr.String()
		if code != ExitUsage || !strings.Contains(msg, tc.want) {
			t.Errorf("serve %q: exit %d, stderr %q; want exit %d and %q", tc.args, code, msg, ExitUsage, tc.want)
		}
		if _, err := os.Stat(dataDir); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("serve %q: data dir exists (%v): it started before refusing", tc.args, err)
		}
	}
}

// TestServeRefusesBadEnv: the SSERELAY_ variables go through the same checks.
func TestServeRefusesBadEnv(t *testing.T) {
	for env, want := range map[string]string{
		"SSERELAY_KEEPALIVE=-1ms": "--keepalive -1ms",
		"SSERELAY_RETRY=nope":     "SSERELAY_RETRY",
		"SSERELAY_JWT_SECRET=":    "no key to verify tokens",
	} {
		t.Run(env, func(t *testing.T) {
			name, value, _ := strings.Cut(env, "=")
			t.Setenv(name, value)
			args := []string{"sserelay", "serve", "--data-dir", filepath.Join(t.TempDir(), "d"), "--nats-listen", "off"}
			if name != "SSERELAY_JWT_SECRET" {
				args = append(args, "--jwt-secret", "s")
			}
			var stderr bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if code := Main(ctx, args, &stderr); code != ExitUsage || !strings.Contains(stderr.String(), want) {
				t.Errorf("exit %d, stderr %q; want exit %d and %q", code, stderr.String(), ExitUsage, want)
			}
		})
	}
}

// TestServeRefusesZeroEnv: every flag that validate refuses as 0 or empty
// on the command line (those whose default is not), set to 0 or empty
// through its SSERELAY_ variable instead, is refused the same way: exit
// ExitUsage, naming the flag and the variable, before anything starts. The
// table is the flags themselves, so a new flag cannot escape it.
func TestServeRefusesZeroEnv(t *testing.T) {
	n := 0
	for _, f := range serveFlags(newServeConfig()) {
		def := flagDefault(f)
		if def.Kind() == reflect.Bool || def.IsZero() || zeroMeans[f.Names()[0]] != "" {
			continue
		}
		n++
		name := f.Names()[0]
		zero := "0"
		if def.Kind() == reflect.String {
			zero = ""
		}
		t.Run(name, func(t *testing.T) {
			envVar := env(name)[0]
			t.Setenv(envVar, zero)
			dataDir := filepath.Join(t.TempDir(), "data")
			args := []string{"sserelay", "serve", "--jwt-secret", "s"}
			for _, kv := range [][2]string{{"data-dir", dataDir}, {"listen", "127.0.0.1:0"}, {"nats-listen", "off"}} {
				if kv[0] != name { // the variable alone sets the flag under test
					args = append(args, "--"+kv[0], kv[1])
				}
			}
			var stderr bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second) // ends a serve that started
			code := Main(ctx, args, &stderr)
			cancel()
			msg := stderr.String()
			if code != ExitUsage || !strings.Contains(msg, "--"+name+" ") || !strings.Contains(msg, envVar) {
				t.Errorf("%s=%q: exit %d, stderr %q; want exit %d naming --%s and %s", envVar, zero, code, msg, ExitUsage, name, envVar)
			}
			if _, err := os.Stat(dataDir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s=%q: data dir exists (%v): it started before refusing", envVar, zero, err)
			}
		})
	}
	if n < 10 {
		t.Fatalf("only %d flags with a non-zero default: the table lost its flags", n)
	}
}

// TestServeBadFlagBinary: what a user sees from the built binary.
func TestServeBadFlagBinary(t *testing.T) {
	bin := sserelayBin(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "serve", "--jwt-secret", "s", "--data-dir", t.TempDir(), "--retry", "-1ms")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != ExitUsage {
		t.Fatalf("exit: %v, want status %d; stderr %q", err, ExitUsage, stderr.String())
	}
	if got := stderr.String(); got != "sserelay: --retry -1ms: want a positive duration up to 1h0m0s\n" {
		t.Errorf("stderr %q", got)
	}
}

// TestServeGoodFlagsPass: the edges of what is valid stay valid.
func TestServeGoodFlagsPass(t *testing.T) {
	cfg, flags := parseServe(t, "--jwt-secret", "s", "--ring-events", "-1", "--token-cache", "-1", "--max-streams", "0",
		"--retention-max-bytes", "-1", "--retention-max-msgs", "-1", "--nats-listen", "off", "--listen", ":0",
		"--cors-origins", "*, https://a.example", "--store-sync", "always", "--retry", "1h", "--keepalive", "10ms",
		"--nats-url", "nats://a:4222, tls://b:4443,c:4222", "--stream-replicas", "5", "--log-level", "debug", "--metrics-listen", "127.0.0.1:0", "--metrics-pprof")
	if err := validate(cfg, flags); err != nil {
		t.Fatal(err)
	}
	if err := validate(parseServe(t, "--jwt-secret", "s")); err != nil {
		t.Fatalf("defaults: %v", err)
	}
}

func TestCheckServe(t *testing.T) {
	if err := CheckServe([]string{"--jwt-secret", "s", "--listen", "0.0.0.0:8080"}); err != nil {
		t.Errorf("good flags: %v", err)
	}
	for _, args := range [][]string{{"--jwt-secret", "s", "--retry", "-1ms"}, {"--jwt-secret", "s", "--keepalive", "15"}, {}} {
		if err := CheckServe(args); err == nil {
			t.Errorf("%q: no error", args)
		}
	}
}

// TestEveryCommandUsageExit: a usage error exits with ExitUsage and says on
// stderr what is wrong, in every command: a flag value that does not parse
// (naming the flag with its two dashes), a required flag left out, an
// unknown flag or command.
func TestEveryCommandUsageExit(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string // each in stderr
	}{
		{[]string{"serve", "--jwt-secret", "s", "--keepalive", "abc"}, []string{"for flag --keepalive"}},
		{[]string{"token", "--jwt-secret", "s", "--sub", "x", "--ttl", "abc"}, []string{"for flag --ttl"}},
		{[]string{"publish", "--app", "a", "--feed", "f", "--timeout", "abc"}, []string{"for flag --timeout"}},
		{[]string{"bench", "--duration", "abc"}, []string{"for flag --duration"}},
		{[]string{"publish"}, []string{"--app", "--feed", "required"}},
		{[]string{"publish", "--app", "a", "data"}, []string{"--feed", "required"}},
		{[]string{"token", "--sub", "x"}, []string{"--jwt-secret", "required"}},
		{[]string{"token", "--jwt-secret", "s"}, []string{"--sub", "required"}},
		{[]string{"publish", "--app", "a.b", "--feed", "f", "x"}, []string{`app_id "a.b"`}},
		{[]string{"publish", "--app", "a", "--feed", "*", "x"}, []string{`feed "*"`}},
		{[]string{"publish", "--app", "a", "--feed", "f", "--topic", "x..y", "x"}, []string{`topic "x..y"`}},
		{[]string{"publish", "--app", "a", "--feed", "f", "--event", "sserelay.x", "x"}, []string{"event"}},
		{[]string{"publish", "--app", "a", "--feed", "f", "--connection-id", "short", "x"}, []string{"connection_id"}},
		{[]string{"publish", "--app", "a", "--feed", "f", "--connection-user", "u", "x"}, []string{"--connection-user needs --connection-id"}},
		{[]string{"publish", "--app", "a", "--feed", "f", "x", "y"}, []string{"one DATA argument"}},
		{[]string{"bogus"}, []string{`unknown command "bogus"`}},
		{[]string{"help", "bogus"}, []string{`unknown command "bogus"`}},
		{[]string{"--bogus"}, []string{"not defined: --bogus"}},
		{[]string{"token", "--bogus", "--jwt-secret", "s", "--sub", "x"}, []string{"not defined: --bogus"}},
	} {
		var stdout, stderr bytes.Buffer
		app := NewApp()
		app.Writer = &stdout
		code := runApp(context.Background(), app, append([]string{"sserelay"}, tc.args...), &stderr)
		msg := stderr.String()
		ok := code == ExitUsage
		for _, w := range tc.want {
			ok = ok && strings.Contains(msg, w)
		}
		if !ok {
			t.Errorf("%q: exit %d, stderr %q; want %d and %q", tc.args, code, msg, ExitUsage, tc.want)
		}
		if strings.Contains(tc.args[0], "bogus") && stdout.Len() > 0 {
			t.Errorf("%q: printed %q on stdout: an error goes to stderr only", tc.args, stdout.String())
		}
	}
	// What still works: help, and the requirements met through the environment.
	for _, args := range [][]string{{}, {"--help"}, {"-h"}, {"help"}, {"h"}, {"help", "token"}, {"token", "--help"}, {"serve", "-h"}, {"help", "help"}} {
		var stdout, stderr bytes.Buffer
		app := NewApp()
		app.Writer = &stdout
		if code := runApp(context.Background(), app, append([]string{"sserelay"}, args...), &stderr); code != 0 || stdout.Len() == 0 {
			t.Errorf("%q: exit %d, stdout %d bytes, stderr %q; want help and 0", args, code, stdout.Len(), stderr.String())
		}
	}
	t.Setenv("SSERELAY_JWT_SECRET", "token-test-secret-0123456789abcdef")
	t.Setenv("SSERELAY_SUB", "alice")
	var stdout, stderr bytes.Buffer
	app := NewApp()
	app.Writer = &stdout
	if code := runApp(context.Background(), app, []string{"sserelay", "token"}, &stderr); code != 0 || stdout.Len() == 0 {
		t.Errorf("token from the environment: exit %d, stderr %q", code, stderr.String())
	}
}

// TestServeZeroMeans: the flags whose 0 means something are taken at 0,
// from the flag and from the variable, and refuse what means nothing.
func TestServeZeroMeans(t *testing.T) {
	for name := range zeroMeans {
		if err := CheckServe([]string{"--jwt-secret", "s", "--" + name, "0"}); err != nil {
			t.Errorf("--%s 0: %v", name, err)
		}
		t.Setenv(env(name)[0], "0")
		if err := CheckServe([]string{"--jwt-secret", "s"}); err != nil {
			t.Errorf("%s=0: %v", env(name)[0], err)
		}
	}
	if err := CheckServe([]string{"--jwt-secret", "s", "--jwt-leeway", "-1s"}); err == nil || !strings.Contains(err.Error(), "--jwt-leeway") {
		t.Errorf("--jwt-leeway -1s: %v, want an error naming the flag", err)
	}
}
