package auth

import (
	"sync"
	"time"
)

// A TokenVerifier turns a bearer token into the claims of its user.
// [*Verifier] and the verifier [NewCache] returns implement it.
type TokenVerifier interface {
	Verify(token string) (*Claims, error)
}

// CachedVerifier remembers the tokens its verifier accepted until they
// expire, so that a publisher sending the same token on every request, or a
// reconnect storm, does not pay for a signature check and a JSON decode each
// time. Only successes are kept; claims are read-only once verified.
type CachedVerifier struct {
	v   TokenVerifier
	max int
	ttl time.Duration // upper bound for tokens without exp

	mu sync.Mutex
	m  map[string]cachedClaims
}

type cachedClaims struct {
	claims *Claims
	until  time.Time
}

// NewCache returns v with a cache of at most size verified tokens, each
// kept until it expires and at most a minute. With size <= 0 it returns v
// itself.
func NewCache(v TokenVerifier, size int) TokenVerifier {
	if size <= 0 {
		return v
	}
	return &CachedVerifier{v: v, max: size, ttl: time.Minute, m: make(map[string]cachedClaims)}
}

// Verify returns the claims of token, from the cache when it holds them.
func (c *CachedVerifier) Verify(token string) (*Claims, error) {
	now := time.Now()
	c.mu.Lock()
	hit, ok := c.m[token]
	c.mu.Unlock()
	if ok && now.Before(hit.until) {
		return hit.claims, nil
	}
	claims, err := c.v.Verify(token)
	if err != nil {
		return nil, err
	}
	until := now.Add(c.ttl)
	if claims.ExpiresAt != nil && claims.ExpiresAt.Before(until) {
		until = claims.ExpiresAt.Time
	}
	if claims.NotBefore != nil && claims.NotBefore.After(now) {
		return claims, nil // valid only thanks to leeway: do not cache
	}
	c.mu.Lock()
	if len(c.m) >= c.max {
		// Full: drop expired entries, and if none, an arbitrary half.
		dropped := 0
		for k, v := range c.m {
			if !now.Before(v.until) || dropped < c.max/2 {
				delete(c.m, k)
				dropped++
			}
		}
	}
	c.m[token] = cachedClaims{claims: claims, until: until}
	c.mu.Unlock()
	return claims, nil
}
