package client

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"sync"
	"time"
)

// A TokenSource returns the bearer token of the stream. The client calls it
// before the first connection, when the token it holds is about to expire,
// and after the relay refused the token (401 or sserelay.token-expired).
// It is called from one goroutine at a time.
type TokenSource interface {
	Token(ctx context.Context) (string, error)
}

// TokenFunc adapts a function to a TokenSource.
type TokenFunc func(ctx context.Context) (string, error)

// Token calls f.
func (f TokenFunc) Token(ctx context.Context) (string, error) { return f(ctx) }

// StaticToken is a TokenSource that always returns the same token: for
// tokens without expiry, or programs that end before it.
func StaticToken(tok string) TokenSource {
	return TokenFunc(func(context.Context) (string, error) { return tok, nil })
}

// tokenHolder caches the current token and knows when to renew it.
type tokenHolder struct {
	src    TokenSource
	before time.Duration // renew this long before expiry (at most a quarter of the lifetime)

	mu      sync.Mutex
	tok     string
	renewAt time.Time // zero: no expiry known
}

// get returns a token, asking the source when there is none or the one held
// is due for renewal; fresh says it came from the source just now.
func (h *tokenHolder) get(ctx context.Context) (tok string, fresh bool, err error) {
	h.mu.Lock()
	tok, renewAt := h.tok, h.renewAt
	h.mu.Unlock()
	if tok != "" && (renewAt.IsZero() || time.Now().Before(renewAt)) {
		return tok, false, nil
	}
	tok, err = h.src.Token(ctx)
	if err != nil {
		return "", false, err
	}
	now := time.Now()
	renewAt = time.Time{}
	if exp, ok := tokenExpiry(tok); ok {
		margin := h.before
		if q := exp.Sub(now) / 4; q < margin {
			margin = q
		}
		renewAt = exp.Add(-margin)
		if h.before < 0 {
			renewAt = time.Time{} // proactive renewal off: wait for the relay to say so
		}
	}
	h.mu.Lock()
	h.tok, h.renewAt = tok, renewAt
	h.mu.Unlock()
	return tok, true, nil
}

// renewal returns when the held token should be replaced (zero: never).
func (h *tokenHolder) renewal() time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.renewAt
}

// invalidate drops the held token: the relay refused it.
func (h *tokenHolder) invalidate() {
	h.mu.Lock()
	h.tok, h.renewAt = "", time.Time{}
	h.mu.Unlock()
}

// tokenExpiry reads the exp claim of a JWT without checking it: the client
// only needs to know when to ask for the next one; the relay verifies.
func tokenExpiry(tok string) (time.Time, bool) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return time.Time{}, false
	}
	var c struct {
		Exp json.Number `json:"exp"`
	}
	if json.Unmarshal(payload, &c) != nil || c.Exp == "" {
		return time.Time{}, false
	}
	f, err := c.Exp.Float64()
	if err != nil || f <= 0 {
		return time.Time{}, false
	}
	sec := int64(f)
	return time.Unix(sec, int64((f-float64(sec))*1e9)), true
}
