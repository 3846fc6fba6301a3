package client

import "testing"

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
