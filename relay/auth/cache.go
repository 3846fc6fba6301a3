package auth

import (
	"crypto/sha256"
	"encoding/binary"
	"sync"
	"time"
	"unsafe"
)

// A TokenVerifier turns a bearer token into the claims of its user.
// [*Verifier] and the verifier [NewCache] returns implement it.
type TokenVerifier interface {
	Verify(token string) (*Claims, error)
}

// CachedVerifier remembers the tokens its verifier accepted until they
// expire, so that a publisher sending the same token on every request, or a
// client reconnecting again and again, does not pay for a signature check
// and a JSON decode each time. Only successes are kept; claims are
// read-only once verified.
//
// A token is kept from its second verification on: most stream tokens are
// used once, by a stream that then stays open for hours, and their claims
// were ~300 bytes of every idle stream's heap. The first verification only
// notes 8 bytes of the token's hash (a false match merely caches a token a
// use early); the notes are forgotten all at once when max are held.
//
// The cache holds each token's SHA-256, not the token: a key kept as the
// token string kept the whole Authorization header value of every stream
// it came from (~150 bytes of an idle stream, against 32), and a 256-bit
// hash lets no forged token find another's entry.
type CachedVerifier struct {
	v   TokenVerifier
	max int
	ttl time.Duration // upper bound for tokens without exp

	mu   sync.Mutex
	m    map[tokenKey]cachedClaims
	once map[uint64]struct{} // the tokens verified once since, by 8 bytes of their key
}

// tokenKey is the SHA-256 of a token.
type tokenKey [sha256.Size]byte

// keyOf hashes token in place: Sum256 neither keeps nor changes its input,
// and a copy of the token was an allocation on every cache hit.
func keyOf(token string) tokenKey {
	return sha256.Sum256(unsafe.Slice(unsafe.StringData(token), len(token)))
}

type cachedClaims struct {
	claims *Claims
	until  int64 // Unix nanoseconds
}

// NewCache returns v with a cache of at most size verified tokens, each
// kept until it expires and at most a minute. With size <= 0 it returns v
// itself.
func NewCache(v TokenVerifier, size int) TokenVerifier {
	if size <= 0 {
		return v
	}
	return &CachedVerifier{v: v, max: size, ttl: time.Minute, m: make(map[tokenKey]cachedClaims), once: make(map[uint64]struct{})}
}

// Verify returns the claims of token, from the cache when it holds them.
func (c *CachedVerifier) Verify(token string) (*Claims, error) {
	now := time.Now()
	key := keyOf(token)
	c.mu.Lock()
	hit, ok := c.m[key]
	c.mu.Unlock()
	if ok && now.UnixNano() < hit.until {
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
	if fp := binary.LittleEndian.Uint64(key[:8]); !c.seenBefore(fp) {
		c.mu.Unlock()
		return claims, nil
	}
	if len(c.m) >= c.max {
		// Full: drop expired entries, and if none, an arbitrary half.
		dropped := 0
		for k, v := range c.m {
			if now.UnixNano() >= v.until || dropped < c.max/2 {
				delete(c.m, k)
				dropped++
			}
		}
	}
	c.m[key] = cachedClaims{claims: claims, until: until.UnixNano()}
	c.mu.Unlock()
	return claims, nil
}

// seenBefore reports whether the token of fingerprint fp was verified once
// already (and forgets it), or notes it. Called with mu held.
func (c *CachedVerifier) seenBefore(fp uint64) bool {
	if _, ok := c.once[fp]; ok {
		delete(c.once, fp)
		return true
	}
	if len(c.once) >= c.max {
		clear(c.once)
	}
	c.once[fp] = struct{}{}
	return false
}
