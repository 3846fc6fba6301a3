package relay

import (
	"strconv"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/sserelay/sserelay/relay/auth"
)

func TestTokenCache(t *testing.T) {
	c := newTokenCache(mustVerifier(t), 4).(*tokenCache)
	tok := token(t, "alice")
	first, err := c.Verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.Verify(tok)
	if err != nil || again != first {
		t.Fatalf("second Verify = %p, %v; want the cached %p", again, err, first)
	}
	if _, err := c.Verify(tok + "x"); err == nil {
		t.Fatal("a bad signature passed")
	}
	if _, ok := c.m[tok+"x"]; ok {
		t.Fatal("a failure was cached")
	}

	// A cached token still expires on time.
	soon := token(t, "bob", func(cl *auth.Claims) { cl.ExpiresAt = jwt.NewNumericDate(time.Now().Add(1100 * time.Millisecond)) })
	if _, err := c.Verify(soon); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(c.m[soon].until) + 50*time.Millisecond)
	if _, err := c.Verify(soon); err == nil {
		t.Fatal("an expired token passed from the cache")
	}

	// The cache stays within its size.
	for i := range 20 {
		if _, err := c.Verify(token(t, "u"+strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	if len(c.m) > 4 {
		t.Fatalf("cache holds %d tokens, limit 4", len(c.m))
	}
	if v := newTokenCache(mustVerifier(t), -1); v == nil {
		t.Fatal("a disabled cache must return the verifier itself")
	} else if _, cached := v.(*tokenCache); cached {
		t.Fatal("TokenCache -1 did not turn the cache off")
	}
}

func BenchmarkVerifyCached(b *testing.B) {
	c := newTokenCache(mustVerifier(b), 100)
	tok := token(b, "alice")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Verify(tok); err != nil {
			b.Fatal(err)
		}
	}
}
