package relay

import (
	"sync"
	"time"

	"github.com/sserelay/sserelay/relay/auth"
)

// tokenCache remembers verified tokens until they expire, so that a
// publisher sending the same token on every request, or a reconnect storm,
// does not pay for a signature check and a JSON decode each time. Only
// successes are kept; claims are read-only once verified.
type tokenCache struct {
	v   TokenVerifier
	max int
	ttl time.Duration // upper bound for tokens without exp

	mu sync.Mutex
	m  map[string]cachedClaims
}

type cachedClaims struct {
	claims *auth.Claims
	until  time.Time
}

func newTokenCache(v TokenVerifier, size int) TokenVerifier {
	if size <= 0 {
		return v
	}
	return &tokenCache{v: v, max: size, ttl: time.Minute, m: make(map[string]cachedClaims)}
}

func (c *tokenCache) Verify(token string) (*auth.Claims, error) {
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
