package cli

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/urfave/cli/v2"

	"github.com/sserelay/sserelay/relay/auth"
	"github.com/sserelay/sserelay/relay/subject"
)

// tokenFlags is what `sserelay token` is configured with.
type tokenFlags struct {
	Secret, Sub, Iss, Aud string
	Apps, Feeds, Publish  cli.StringSlice
	TTL                   time.Duration
}

func tokenCommand() *cli.Command {
	f := &tokenFlags{TTL: time.Hour}
	return &cli.Command{
		Name:         "token",
		Usage:        "print an HS256 token for a user (for development and tests)",
		OnUsageError: usage,
		Before:       requireFlags("jwt-secret", "sub"),
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "jwt-secret", EnvVars: env("jwt-secret"), Usage: "HS256 secret the relay verifies with (required)", Destination: &f.Secret},
			&cli.StringFlag{Name: "sub", EnvVars: env("sub"), Usage: "the user: their own feed (required)", Destination: &f.Sub},
			&cli.StringSliceFlag{Name: "app", EnvVars: env("app"), Usage: "app id the token may use (repeatable; none = any)", Destination: &f.Apps},
			&cli.StringSliceFlag{Name: "feed", EnvVars: env("feed"), Usage: "extra feed the token may read (repeatable)", Destination: &f.Feeds},
			&cli.StringSliceFlag{Name: "publish", EnvVars: env("publish"), Usage: "publish grant over HTTP (repeatable): APP or * (all apps) for the feeds the token may read, APP:* or *:* for any feed (backend services)", Destination: &f.Publish},
			&cli.DurationFlag{Name: "ttl", EnvVars: env("ttl"), Value: f.TTL, Usage: "lifetime; 0 for a token without exp", Destination: &f.TTL},
			&cli.StringFlag{Name: "iss", EnvVars: env("iss"), Usage: "issuer claim", Destination: &f.Iss},
			&cli.StringFlag{Name: "aud", EnvVars: env("aud"), Usage: "audience claim", Destination: &f.Aud},
		},
		Action: func(c *cli.Context) error {
			if f.TTL < 0 {
				// Not a token without exp, which is what 0 asks for.
				return cli.Exit(fmt.Sprintf("--ttl %s: must not be negative (0: a token without exp)", f.TTL), ExitUsage)
			}
			if f.Secret == "" {
				// Sign would say no verification key is configured: true, but not what this command lacks.
				return cli.Exit("--jwt-secret is required to sign the token: the HS256 secret the relay verifies with", ExitUsage)
			}
			// The relay refuses a sub that is not a feed name (401) and never grants a feed that is
			// not one subject token: minting either would print a token that cannot work.
			if err := checkFeed(f.Sub); err != nil {
				return cli.Exit("--sub "+err.Error(), ExitUsage)
			}
			for _, feed := range f.Feeds.Value() {
				if err := checkFeed(feed); err != nil {
					return cli.Exit("--feed "+err.Error(), ExitUsage)
				}
			}
			for _, a := range f.Apps.Value() {
				if !subject.ValidToken(a) {
					return cli.Exit(fmt.Sprintf("--app %q: an app id is one subject token (no '.', '*', '>' or spaces)", a), ExitUsage)
				}
			}
			for _, g := range f.Publish.Value() {
				if err := checkPublishGrant(g, f.Apps.Value()); err != nil {
					return cli.Exit("--publish: "+err.Error(), ExitUsage)
				}
			}
			now := time.Now()
			claims := auth.Claims{
				RegisteredClaims: jwt.RegisteredClaims{Subject: f.Sub, IssuedAt: jwt.NewNumericDate(now), Issuer: f.Iss},
				Apps:             f.Apps.Value(),
				Feeds:            f.Feeds.Value(),
				Publish:          f.Publish.Value(),
			}
			if f.Aud != "" {
				claims.Audience = jwt.ClaimStrings{f.Aud}
			}
			if f.TTL > 0 {
				claims.ExpiresAt = jwt.NewNumericDate(now.Add(f.TTL))
			}
			tok, err := auth.Sign([]byte(f.Secret), claims)
			if err != nil {
				return fmt.Errorf("sign token: %w", err)
			}
			_, err = fmt.Fprintln(c.App.Writer, tok)
			return err
		},
	}
}

// checkPublishGrant refuses a --publish value that is none of the claim's shapes, or that names
// an app outside --app (the relay bounds publishing by the apps claim too), either of which would
// mint a token that grants nothing anyone meant.
func checkPublishGrant(g string, apps []string) error {
	app, _ := strings.CutSuffix(g, auth.AnyFeed)
	switch {
	case app != "*" && !subject.ValidToken(app):
		return fmt.Errorf("%q is not APP, APP:*, * or *:* (an app id is one subject token)", g)
	case strings.Contains(app, ":"):
		// "demo:room" or "demo:" reads as a grant for one feed, which the claim has no shape for:
		// the relay would take it for an app named so and answer 403 for app demo.
		return fmt.Errorf("%q is not APP, APP:*, * or *:*: a grant cannot name one feed (APP covers the feeds the token may read, APP:* any feed)", g)
	case app != "*" && len(apps) > 0 && !slices.Contains(apps, app):
		return fmt.Errorf("%q names app %q, which --app does not grant: the token could never use it", g, app)
	}
	return nil
}

// checkFeed refuses what the relay never takes for a feed (a sub or a
// feeds entry): anything but one subject token.
func checkFeed(feed string) error {
	if !subject.ValidToken(feed) {
		return fmt.Errorf("%q: a feed is one subject token of 1 to %d characters, without '.', '*', '>', whitespace or control characters", feed, subject.MaxTokenLen)
	}
	return nil
}
