// Package subject validates the parts of the relay's NATS subjects,
// <prefix>.<app>.<feed>[.<topic…>]. Both the HTTP layer and token checks use
// it, so that no input can be turned into a wildcard or an extra token.
package subject

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// MaxTokenLen bounds one subject token (app, feed or topic part).
const MaxTokenLen = 128

// ValidToken reports whether s can be used as one NATS subject token: it is
// non-empty, at most MaxTokenLen bytes of valid UTF-8 and has no '.', '*',
// '>', whitespace or control characters. Anything else could widen a
// subscription into a wildcard or split into several tokens.
func ValidToken(s string) bool {
	if s == "" || len(s) > MaxTokenLen || !utf8.ValidString(s) {
		return false
	}
	for _, c := range s {
		if c == '.' || c == '*' || c == '>' || unicode.IsSpace(c) || unicode.IsControl(c) {
			return false
		}
	}
	return true
}

// ValidTopic reports whether s is one or more valid tokens joined by '.'.
func ValidTopic(s string) bool {
	if s == "" || len(s) > 4*MaxTokenLen {
		return false
	}
	for tok := range strings.SplitSeq(s, ".") {
		if !ValidToken(tok) {
			return false
		}
	}
	return true
}
