package cli

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/sserelay/sserelay/relay/auth"
)

// TestTokenPublishShapes mints each shape of the publish claim with
// `sserelay token --publish` and checks what the relay's verifier makes of it.
func TestTokenPublishShapes(t *testing.T) {
	const secret = "token-test-secret-0123456789abcdef"
	v, err := auth.NewVerifier(context.Background(), auth.Config{Secret: []byte(secret)})
	if err != nil {
		t.Fatal(err)
	}
	mint := func(args ...string) (string, error) {
		var out bytes.Buffer
		app := NewApp()
		app.Writer, app.ErrWriter = &out, io.Discard
		app.ExitErrHandler = func(*cli.Context, error) {}
		err := app.Run(append([]string{"sserelay", "token", "--jwt-secret", secret, "--sub", "alice", "--feed", "team"}, args...))
		return strings.TrimSpace(out.String()), err
	}
	type check struct {
		app, feed string
		want      bool
	}
	tests := []struct {
		publish []string
		checks  []check
	}{
		{[]string{"demo"}, []check{{"demo", "alice", true}, {"demo", "team", true}, {"demo", "bob", false}, {"other", "alice", false}}},
		{[]string{"demo:*"}, []check{{"demo", "bob", true}, {"other", "alice", false}}},
		{[]string{"*"}, []check{{"other", "team", true}, {"other", "bob", false}}},
		{[]string{"*:*"}, []check{{"other", "bob", true}}},
		{[]string{"a", "b:*"}, []check{{"a", "bob", false}, {"b", "bob", true}, {"a", "alice", true}}},
	}
	for _, tt := range tests {
		var args []string
		for _, p := range tt.publish {
			args = append(args, "--publish", p)
		}
		tok, err := mint(args...)
		if err != nil {
			t.Fatalf("token %q: %v", args, err)
		}
		c, err := v.Verify(tok)
		if err != nil {
			t.Fatalf("verify the token of %q: %v", args, err)
		}
		if strings.Join(c.Publish, ",") != strings.Join(tt.publish, ",") {
			t.Errorf("%q: publish claim %q", args, c.Publish)
		}
		for _, ch := range tt.checks {
			if got := c.AllowsPublish(ch.app, ch.feed); got != ch.want {
				t.Errorf("%q: AllowsPublish(%q, %q) = %v, want %v", args, ch.app, ch.feed, got, ch.want)
			}
		}
	}
	// A grant outside --app could never be used: the apps claim bounds publishing too.
	for _, bad := range [][]string{{"--app", "demo", "--publish", "other"}, {"--app", "demo", "--app", "x", "--publish", "other:*"}} {
		if tok, err := mint(bad...); err == nil || tok != "" || !strings.Contains(err.Error(), `which --app does not grant`) {
			t.Errorf("%q: minted %q (err %v), want a refusal", bad, tok, err)
		}
	}
	if tok, err := mint("--app", "demo", "--publish", "demo:*", "--publish", "*"); err != nil || tok == "" {
		t.Errorf("--app demo --publish demo:* --publish '*': %v", err)
	}
	for _, bad := range []string{"de.mo", ":*", "demo:*:*", "a b", ">"} {
		if tok, err := mint("--publish", bad); err == nil || tok != "" {
			t.Errorf("--publish %q: minted %q (err %v), want a refusal", bad, tok, err)
		}
	}
	for _, bad := range [][]string{{"--ttl", "-5s"}, {"--ttl", "-1h"}, {"--app", "a*"}, {"--app", "de.mo"}, {"--app", ""}} {
		if tok, err := mint(bad...); err == nil || tok != "" {
			t.Errorf("%q: minted %q (err %v), want a refusal", bad, tok, err)
		}
	}
}

// TestTokenRefusesWhatTheRelayRefuses: `sserelay token` must not mint a
// grant, feed or user the relay would never accept (it answers 403, or 401
// for a bad sub, to such a token). Each is refused with ExitUsage, naming
// the flag, and nothing is printed on stdout.
func TestTokenRefusesWhatTheRelayRefuses(t *testing.T) {
	base := map[string]string{"--jwt-secret": "token-test-secret-0123456789abcdef", "--sub": "alice"}
	tests := []struct {
		flag, value string
		want        string // in the message, besides the flag
	}{
		{"--publish", "demo:room", "APP:*"},
		{"--publish", "demo:", "APP:*"},
		{"--publish", "demo:room:*", "APP:*"},
		{"--feed", "a.b", "subject token"},
		{"--feed", "*", "subject token"},
		{"--feed", ">", "subject token"},
		{"--feed", "", "subject token"},
		{"--feed", "a b", "subject token"},
		{"--feed", strings.Repeat("f", 129), "subject token"},
		{"--sub", "a.b", "subject token"},
		{"--sub", "*", "subject token"},
		{"--sub", "", "subject token"},
		{"--jwt-secret", "", "required to sign"},
	}
	for _, tt := range tests {
		args := []string{"sserelay", "token"}
		for f, v := range base {
			if f != tt.flag {
				args = append(args, f, v)
			}
		}
		args = append(args, tt.flag, tt.value)
		var stdout, stderr bytes.Buffer
		code := mainWithStdout(t, args, &stdout, &stderr)
		msg := stderr.String()
		if code != ExitUsage || !strings.Contains(msg, tt.flag) || !strings.Contains(msg, tt.want) || stdout.Len() != 0 {
			t.Errorf("token %s %q: exit %d, stdout %q, stderr %q; want exit %d naming %s and %q",
				tt.flag, tt.value, code, stdout.String(), msg, ExitUsage, tt.flag, tt.want)
		}
	}
}

// mainWithStdout is Main with the application's stdout captured too.
func mainWithStdout(t *testing.T, args []string, stdout, stderr io.Writer) int {
	t.Helper()
	app := NewApp()
	app.Writer = stdout
	return runApp(context.Background(), app, args, stderr)
}
