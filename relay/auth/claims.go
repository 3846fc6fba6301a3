package auth

import (
	"encoding/json"
	"slices"
	"strings"

	"github.com/golang-jwt/jwt/v5"

	"github.com/sserelay/sserelay/relay/subject"
)

// maxFeedLen bounds a token's sub, which becomes a NATS subject token: a long one would only
// bloat every subject and every registry key built from it.
const maxFeedLen = 128

// Claims are the JWT claims the relay understands. Decoding accepts each of Apps, Feeds and
// Publish either as a JSON list or as a single JSON string (a one-element list), because token
// issuers commonly emit a lone value as a plain string.
type Claims struct {
	jwt.RegisteredClaims          // sub, exp, nbf, iss, aud...
	Apps                 []string `json:"apps,omitempty"`    // app ids the token may use; absent (nil) = any app
	Feeds                []string `json:"feeds,omitempty"`   // extra feeds it may read (besides sub)
	Publish              []string `json:"publish,omitempty"` // where it may publish over HTTP: "<app>", "*" (its readable feeds), "<app>:*", "*:*" (any feed)
}

// AllowsApp reports whether the token may be used with app. A token without an apps claim
// (Apps == nil) allows every app; an empty list allows none. An app that is not a valid subject
// token is never allowed, so a caller that forgot to validate its input cannot be led into
// subscribing to a wildcard.
func (c *Claims) AllowsApp(app string) bool {
	if !validToken(app) {
		return false
	}
	return c.Apps == nil || slices.Contains(c.Apps, app)
}

// AllowsFeed reports whether the token may read feed: its own feed (sub) or one granted in
// Feeds. Matching is exact; like AllowsApp it refuses anything that is not a valid subject token.
func (c *Claims) AllowsFeed(feed string) bool {
	if !validToken(feed) {
		return false
	}
	return feed == c.Subject || slices.Contains(c.Feeds, feed)
}

// AnyFeed is the suffix of a publish grant that covers every feed of its app: "demo:*" (one app),
// "*:*" (every app). Without it a grant covers only the feeds the token may read.
const AnyFeed = ":*"

// AllowsPublishApp reports whether the publish claim names app at all ("<app>", "<app>:*", "*" or
// "*:*") and the token may use app ([Claims.AllowsApp]): apps bounds the whole token, so "*" is
// every app the token may use, not every app there is. Unlike apps, an absent publish claim
// grants nothing: publishing is the rarer, riskier right and must be asked for.
func (c *Claims) AllowsPublishApp(app string) bool {
	ok, _ := c.publishGrant(app)
	return ok
}

// AllowsPublish reports whether the token may publish into feed of app over HTTP: the claim names
// the app and either says any feed ("<app>:*", "*:*") or feed is one the token may read (its sub
// or one of its feeds, see [Claims.AllowsFeed]). So a browser token with publish ["demo"] writes
// into its user's own feeds only, and only a backend's token, minted with "demo:*", writes into
// anyone's.
func (c *Claims) AllowsPublish(app, feed string) bool {
	ok, anyFeed := c.publishGrant(app)
	return ok && validToken(feed) && (anyFeed || c.AllowsFeed(feed))
}

// publishGrant reports whether the publish claim names app, and whether for any feed.
func (c *Claims) publishGrant(app string) (granted, anyFeed bool) {
	if !c.AllowsApp(app) {
		return false, false
	}
	for _, g := range c.Publish {
		a, all := strings.CutSuffix(g, AnyFeed)
		if a == "*" || a == app {
			granted = true
			if all {
				return true, true
			}
		}
	}
	return granted, false
}

// UnmarshalJSON decodes the claims, accepting a single string wherever a list is expected.
func (c *Claims) UnmarshalJSON(data []byte) error {
	// plain has Claims' fields but not its methods, so decoding into it does not recurse here;
	// the outer fields shadow plain's list fields.
	type plain Claims
	aux := struct {
		*plain
		Apps    stringList `json:"apps"`
		Feeds   stringList `json:"feeds"`
		Publish stringList `json:"publish"`
	}{plain: (*plain)(c)}
	if err := json.Unmarshal(data, &aux); err != nil {
		return err
	}
	c.Apps, c.Feeds, c.Publish = aux.Apps, aux.Feeds, aux.Publish
	return nil
}

// MarshalJSON encodes the claims like the struct tags say, except that an empty but non-nil
// Apps is written as [] rather than omitted: omitting it would turn "no app" into "any app".
func (c Claims) MarshalJSON() ([]byte, error) {
	type plain Claims
	aux := struct {
		plain
		Apps *[]string `json:"apps,omitempty"`
	}{plain: plain(c)}
	if c.Apps != nil {
		aux.Apps = &c.Apps
	}
	return json.Marshal(aux)
}

// stringList is a list claim that may also arrive as one string.
type stringList []string

// UnmarshalJSON accepts "a" as ["a"]; null leaves the list nil (absent), and [] gives an empty,
// non-nil list, so that the two stay distinguishable for apps.
func (l *stringList) UnmarshalJSON(data []byte) error {
	if len(data) > 0 && data[0] == '"' {
		var s string
		if err := json.Unmarshal(data, &s); err != nil {
			return err
		}
		*l = stringList{s}
		return nil
	}
	return json.Unmarshal(data, (*[]string)(l))
}

// validToken reports whether s can stand as one NATS subject token without
// changing the subject's meaning.
func validToken(s string) bool { return subject.ValidToken(s) }

// validFeed reports whether s is acceptable as a feed name, which a sub always is.
func validFeed(s string) bool {
	return len(s) <= maxFeedLen && validToken(s)
}
