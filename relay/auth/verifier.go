// Package auth verifies the JWTs that SSE Relay accepts and answers what a verified token
// allows: which apps it may use, which feeds it may read and where it may publish.
//
// One [Verifier] holds exactly one kind of key (an HS256 secret, a PEM public key, or a JWKS
// URL), and accepts only the algorithm that kind of key is for, so a token cannot pick how it
// is checked.
package auth

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Config says how tokens are verified. Exactly one of Secret, PublicKeyFile and JWKSURL must be set.
type Config struct {
	Secret        []byte        // HS256 shared secret
	PublicKeyFile string        // PEM: RSA (RS256), ECDSA P-256 (ES256), Ed25519 (EdDSA) public key or certificate
	JWKSURL       string        // JWKS endpoint (RS256/ES256/EdDSA keys by kid)
	Issuer        string        // when set, iss must equal it
	Audience      string        // when set, aud must contain it
	Leeway        time.Duration // clock skew allowed for exp/nbf
	RequireExp    bool          // when true, tokens without exp are refused
	HTTPClient    *http.Client  // for JWKS; nil = a client with a 10 s timeout
	JWKSRefresh   time.Duration // interval of the background JWKS refetches (default 5m; an unknown kid triggers one at most every 10 s)
}

// ErrInvalidToken is wrapped by every error [Verifier.Verify] returns, so callers can tell a bad
// token (401) from anything else with errors.Is.
var ErrInvalidToken = errors.New("invalid token")

// ErrNoKey is wrapped by [NewVerifier] when the config does not name exactly one key source,
// and by [Sign] when the secret is empty.
var ErrNoKey = errors.New("no verification key configured")

// errAlgMismatch is the keyfunc's error when the token's alg does not fit the key it names.
var errAlgMismatch = errors.New("token alg does not fit the key")

// tokenError is a Verify failure. Its message is short and safe to show to the client; the cause,
// for logs, stays reachable through errors.Is/As but out of the message, since it may name
// internals such as the JWKS URL.
type tokenError struct {
	msg   string
	cause error
}

func (e *tokenError) Error() string { return e.msg }

// Unwrap exposes ErrInvalidToken and the cause, if any.
func (e *tokenError) Unwrap() []error {
	if e.cause == nil {
		return []error{ErrInvalidToken}
	}
	return []error{ErrInvalidToken, e.cause}
}

// Verifier checks tokens against one configured key source. It is safe for concurrent use.
type Verifier struct {
	parser     *jwt.Parser
	algs       []string    // the algorithms the key source allows
	secret     []byte      // set for HS256
	key        publicKey   // set for a PEM public key
	jwks       *jwksSource // set for a JWKS URL
	requireExp bool
	issuer     string
	closeOnce  sync.Once
}

// NewVerifier builds a Verifier from cfg. With a JWKS URL it fetches the key set once before
// returning, so that a wrong URL fails at start-up rather than on the first request, and starts
// a goroutine that refetches it in the background (every JWKSRefresh, and for unknown kids at
// most every 10 s) until [Verifier.Close]. ctx bounds the first fetch only.
func NewVerifier(ctx context.Context, cfg Config) (*Verifier, error) {
	n := 0
	for _, set := range []bool{len(cfg.Secret) > 0, cfg.PublicKeyFile != "", cfg.JWKSURL != ""} {
		if set {
			n++
		}
	}
	if n != 1 {
		return nil, fmt.Errorf("auth: %w: want exactly one of secret, public key file and JWKS URL, got %d", ErrNoKey, n)
	}
	if cfg.Leeway < 0 || cfg.JWKSRefresh < 0 {
		return nil, fmt.Errorf("auth: negative leeway (%v) or JWKS refresh (%v)", cfg.Leeway, cfg.JWKSRefresh)
	}

	v := &Verifier{requireExp: cfg.RequireExp, issuer: cfg.Issuer}
	switch {
	case len(cfg.Secret) > 0:
		v.secret = bytes.Clone(cfg.Secret) // the caller may reuse its slice
		v.algs = []string{algHS256}
	case cfg.PublicKeyFile != "":
		k, err := readPublicKeyFile(cfg.PublicKeyFile)
		if err != nil {
			return nil, fmt.Errorf("auth: public key file %s: %w", cfg.PublicKeyFile, err)
		}
		v.key = k
		v.algs = []string{k.alg}
	default:
		s, err := newJWKSSource(ctx, cfg)
		if err != nil {
			return nil, fmt.Errorf("auth: JWKS %s: %w", cfg.JWKSURL, err)
		}
		v.jwks = s
		v.algs = []string{algRS256, algES256, algEdDSA}
	}

	opts := []jwt.ParserOption{jwt.WithValidMethods(v.algs), jwt.WithLeeway(cfg.Leeway)}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	if cfg.RequireExp {
		opts = append(opts, jwt.WithExpirationRequired())
	}
	v.parser = jwt.NewParser(opts...)
	return v, nil
}

// newJWKSSource checks the URL and makes the first fetch.
func newJWKSSource(ctx context.Context, cfg Config) (*jwksSource, error) {
	u, err := url.Parse(cfg.JWKSURL)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return nil, fmt.Errorf("scheme %q, want https or http", u.Scheme)
	}
	s := &jwksSource{
		url:          cfg.JWKSURL,
		client:       cfg.HTTPClient,
		refresh:      cfg.JWKSRefresh,
		missInterval: jwksMissInterval,
		missWait:     jwksMissWait,
	}
	if s.client == nil {
		s.client = &http.Client{Timeout: jwksTimeout}
	}
	if s.refresh == 0 {
		s.refresh = defaultJWKSRefresh
	}
	if err := s.fetch(ctx); err != nil {
		return nil, err
	}
	s.start()
	return s, nil
}

// Verify checks token's signature and claims and returns the claims. Beyond exp, nbf and the
// configured iss and aud, it refuses a token whose sub is missing or cannot serve as a feed name
// (see [Claims.AllowsFeed]), since the sub becomes a NATS subject token. Any failure wraps
// [ErrInvalidToken] and has a message fit for the client, such as "token expired".
func (v *Verifier) Verify(token string) (*Claims, error) {
	c := new(Claims)
	t, err := v.parser.ParseWithClaims(token, c, v.keyfunc)
	if err != nil {
		return nil, v.reject(t, c, err)
	}
	if err := checkSubject(c.Subject); err != nil {
		return nil, err
	}
	return c, nil
}

// keyfunc picks the key for t. The parser has already refused algorithms outside v.algs; the
// check against the key's own algorithm matters for JWKS, where each kid has its own.
func (v *Verifier) keyfunc(t *jwt.Token) (any, error) {
	alg := t.Method.Alg()
	switch {
	case v.secret != nil:
		if alg != algHS256 {
			return nil, errAlgMismatch
		}
		return v.secret, nil
	case v.jwks != nil:
		kid, _ := t.Header["kid"].(string)
		return v.jwks.keyFor(kid, alg)
	default:
		if alg != v.key.alg {
			return nil, errAlgMismatch
		}
		return v.key.key, nil
	}
}

// reject turns a parser error into a tokenError with a client-safe message.
func (v *Verifier) reject(t *jwt.Token, c *Claims, err error) error {
	var msg string
	switch {
	case errors.Is(err, jwt.ErrTokenMalformed):
		msg = "token malformed"
	case t == nil || t.Method == nil || !slices.Contains(v.algs, t.Method.Alg()) || errors.Is(err, errAlgMismatch):
		// Covers alg "none", unknown algorithms and HS256 tokens aimed at a public key.
		msg = "token algorithm not allowed"
	case errors.Is(err, errUnknownKey):
		msg = "token key unknown"
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		msg = "token signature invalid"
	case errors.Is(err, jwt.ErrTokenExpired):
		msg = "token expired"
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		msg = "token not valid yet"
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		switch {
		case v.requireExp && c.ExpiresAt == nil:
			msg = "token has no exp"
		case v.issuer != "" && c.Issuer == "":
			msg = "token has no iss"
		default:
			msg = "token has no aud"
		}
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		msg = "token issuer not accepted"
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		msg = "token audience not accepted"
	default:
		msg = "token invalid"
	}
	return &tokenError{msg: msg, cause: err}
}

// checkSubject refuses a sub that cannot serve as the user's feed: it becomes a subject token.
func checkSubject(sub string) error {
	switch {
	case sub == "":
		return &tokenError{msg: "token has no sub"}
	case !validFeed(sub):
		return &tokenError{msg: "token sub is not a valid feed name"}
	}
	return nil
}

// Sign mints an HS256 token with claims c (used by `sserelay token` and by tests). It refuses a
// sub that Verify would refuse, so a minted token is never dead on arrival.
func Sign(secret []byte, c Claims) (string, error) {
	if len(secret) == 0 {
		return "", fmt.Errorf("auth: sign: %w", ErrNoKey)
	}
	if err := checkSubject(c.Subject); err != nil {
		return "", fmt.Errorf("auth: sign: %w", err)
	}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(secret)
	if err != nil {
		return "", fmt.Errorf("auth: sign: %w", err)
	}
	return s, nil
}

// Close stops the JWKS refresher of a verifier that has one (cancelling a fetch in flight) and
// waits for it to end. It may be called more than once; Verify keeps working afterwards with
// the keys it has, refetching nothing.
func (v *Verifier) Close() {
	if v.jwks != nil {
		v.closeOnce.Do(v.jwks.close)
	}
}
