// Package connid holds the connection id of the interface contract: the id
// a stream is given (or proposes), that its client sends back as
// X-Connection-Id on its own API calls so that the relay skips that one
// connection. The relay and the Go client share the rule.
package connid

import (
	"crypto/rand"
	"encoding/base64"
)

// New returns 128 random bits, URL-safe (22 characters): unguessable, so
// that no one can exclude another user's connection on purpose.
func New() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand documents it)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// Valid reports whether s may be a connection id: 8 to 64 characters of
// A-Z, a-z, 0-9, '_' and '-', so that it fits a header, a query parameter
// and a log line as it is.
func Valid(s string) bool {
	if len(s) < 8 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
