package client

import (
	"testing"
	"time"
)

func TestTokenExpiry(t *testing.T) {
	// {"sub":"a","exp":1700000000}
	tok := "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIiwiZXhwIjoxNzAwMDAwMDAwfQ.sig"
	exp, ok := tokenExpiry(tok)
	if !ok || exp.Unix() != 1700000000 {
		t.Fatalf("exp = %v, %v", exp, ok)
	}
	for _, bad := range []string{"", "opaque-token", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.sig"} {
		if _, ok := tokenExpiry(bad); ok {
			t.Errorf("%q: an expiry found", bad)
		}
	}
}

// TestBackoff: full jitter under a cap that doubles from MinBackoff to
// MaxBackoff.
func TestBackoff(t *testing.T) {
	c := &Client{cfg: Config{MinBackoff: time.Second, MaxBackoff: 30 * time.Second}}
	for n, limit := range map[int]time.Duration{1: time.Second, 2: 2 * time.Second, 5: 16 * time.Second, 6: 30 * time.Second, 100: 30 * time.Second} {
		var lo, hi time.Duration = limit, 0
		for range 2000 {
			d := c.backoff(n)
			if d < 0 || d > limit {
				t.Fatalf("failure %d: wait %s, want 0 to %s", n, d, limit)
			}
			lo, hi = min(lo, d), max(hi, d)
		}
		// Full jitter spreads over the whole range (2000 draws: the odds
		// of missing a tenth at either end are below 10^-90).
		if lo > limit/10 || hi < limit*9/10 {
			t.Errorf("failure %d: waits from %s to %s, want spread over 0 to %s", n, lo, hi, limit)
		}
	}
}
