package auth

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

var cacheSecret = []byte("cache-test-secret-0123456789abcdef")

func cacheVerifier(t testing.TB) *Verifier {
	v, err := NewVerifier(context.Background(), Config{Secret: cacheSecret})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// cacheToken mints a token for sub, valid for an hour, edited by mods.
func cacheToken(t testing.TB, sub string, mods ...func(*Claims)) string {
	t.Helper()
	c := Claims{RegisteredClaims: jwt.RegisteredClaims{Subject: sub, ExpiresAt: jwt.NewNumericDate(time.Now().Add(time.Hour))}}
	for _, m := range mods {
		m(&c)
	}
	s, err := Sign(cacheSecret, c)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestTokenCache(t *testing.T) {
	c := NewCache(cacheVerifier(t), 4).(*CachedVerifier)
	tok := cacheToken(t, "alice")
	first, err := c.Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	// Used once, a token is only noted: most stream tokens are never seen again.
	if _, ok := c.m[keyOf(tok)]; ok || len(c.once) != 1 {
		t.Fatalf("after one use: cached %v, %d noted; want not cached, 1 noted", ok, len(c.once))
	}
	second, err := c.Verify(tok)
	if err != nil || second == first {
		t.Fatalf("second Verify = %p, %v; want claims verified again, not %p", second, err, first)
	}
	again, err := c.Verify(tok)
	if err != nil || again != second {
		t.Fatalf("third Verify = %p, %v; want the cached %p", again, err, second)
	}
	if len(c.once) != 0 {
		t.Fatalf("a cached token is still noted (%d notes)", len(c.once))
	}
	if _, err := c.Verify(tok + "x"); err == nil {
		t.Fatal("a bad signature passed")
	}
	if _, ok := c.m[keyOf(tok+"x")]; ok {
		t.Fatal("a failure was cached")
	}

	// A cached token still expires on time.
	soon := cacheToken(t, "bob", func(cl *Claims) { cl.ExpiresAt = jwt.NewNumericDate(time.Now().Add(1100 * time.Millisecond)) })
	for range 2 {
		if _, err := c.Verify(soon); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(time.Until(time.Unix(0, c.m[keyOf(soon)].until)) + 50*time.Millisecond)
	if _, err := c.Verify(soon); err == nil {
		t.Fatal("an expired token passed from the cache")
	}

	// The cache and the notes stay within the size.
	for i := range 20 {
		tok := cacheToken(t, "u"+strconv.Itoa(i))
		for range 1 + i%2 { // half of them used twice
			if _, err := c.Verify(tok); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(c.m) > 4 || len(c.once) > 4 {
		t.Fatalf("cache holds %d tokens and %d notes, limit 4", len(c.m), len(c.once))
	}
	if v := NewCache(cacheVerifier(t), -1); v == nil {
		t.Fatal("a disabled cache must return the verifier itself")
	} else if _, cached := v.(*CachedVerifier); cached {
		t.Fatal("TokenCache -1 did not turn the cache off")
	}
}

func BenchmarkVerifyCached(b *testing.B) {
	c := NewCache(cacheVerifier(b), 100)
	tok := cacheToken(b, "alice")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Verify(tok); err != nil {
			b.Fatal(err)
		}
	}
}
