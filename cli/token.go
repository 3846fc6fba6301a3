package cli

import (
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/urfave/cli/v2"

	"github.com/sserelay/sserelay/relay/auth"
)

func tokenCommand() *cli.Command {
	return &cli.Command{
		Name:  "token",
		Usage: "print an HS256 token for a user (for development and tests)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "jwt-secret", EnvVars: env("jwt-secret"), Required: true, Usage: "HS256 secret the relay verifies with"},
			&cli.StringFlag{Name: "sub", Required: true, Usage: "the user: their own feed"},
			&cli.StringSliceFlag{Name: "app", Usage: "app id the token may use (repeatable; none = any)"},
			&cli.StringSliceFlag{Name: "feed", Usage: "extra feed the token may read (repeatable)"},
			&cli.StringSliceFlag{Name: "publish", Usage: "app id the token may publish to over HTTP, * for all (repeatable)"},
			&cli.DurationFlag{Name: "ttl", Value: time.Hour, Usage: "lifetime; 0 for a token without exp"},
			&cli.StringFlag{Name: "iss", Usage: "issuer claim"},
			&cli.StringFlag{Name: "aud", Usage: "audience claim"},
		},
		Action: func(c *cli.Context) error {
			now := time.Now()
			claims := auth.Claims{
				RegisteredClaims: jwt.RegisteredClaims{Subject: c.String("sub"), IssuedAt: jwt.NewNumericDate(now), Issuer: c.String("iss")},
				Apps:             c.StringSlice("app"),
				Feeds:            c.StringSlice("feed"),
				Publish:          c.StringSlice("publish"),
			}
			if aud := c.String("aud"); aud != "" {
				claims.Audience = jwt.ClaimStrings{aud}
			}
			if ttl := c.Duration("ttl"); ttl > 0 {
				claims.ExpiresAt = jwt.NewNumericDate(now.Add(ttl))
			}
			tok, err := auth.Sign([]byte(c.String("jwt-secret")), claims)
			if err != nil {
				return fmt.Errorf("sign token: %w", err)
			}
			_, err = fmt.Fprintln(c.App.Writer, tok)
			return err
		},
	}
}
