// Package subject validates the parts of the relay's NATS subjects,
// <prefix>.<app>.<feed>[.<topic…>]. Both the HTTP layer and token checks use
// it, so that no input can be turned into a wildcard or an extra token.
package subject

import (
	"errors"
	"fmt"
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

// ErrBadToken is wrapped by every error of CheckToken and CheckTopic.
var ErrBadToken = errors.New("invalid subject token")

// CheckToken returns an error naming kind (such as "feed") when s is not a
// valid token; see [ValidToken].
func CheckToken(kind, s string) error {
	if !ValidToken(s) {
		return fmt.Errorf("%w: %s %q must be 1 to %d characters without '.', '*', '>', whitespace or control characters", ErrBadToken, kind, s, MaxTokenLen)
	}
	return nil
}

// CheckTopic returns an error when s is not a valid topic; see [ValidTopic].
func CheckTopic(s string) error {
	if !ValidTopic(s) {
		return fmt.Errorf("%w: topic %q must be tokens of 1 to %d characters joined by '.', without '*', '>', whitespace or control characters", ErrBadToken, s, MaxTokenLen)
	}
	return nil
}

// Join returns the NATS subject of an event: <prefix>.<app>.<feed>[.<topic>].
func Join(prefix, app, feed, topic string) string {
	if topic == "" {
		return prefix + "." + app + "." + feed
	}
	return prefix + "." + app + "." + feed + "." + topic
}

// Split splits <prefix>.<app>.<feed>[.<topic…>] into the key "<app>.<feed>"
// and the topic. Both are substrings of subj: no allocation on the dispatch
// path.
func Split(prefix, subj string) (key, topic string, ok bool) {
	if len(subj) <= len(prefix)+1 || subj[:len(prefix)] != prefix || subj[len(prefix)] != '.' {
		return "", "", false
	}
	rest := subj[len(prefix)+1:]
	i := strings.IndexByte(rest, '.')
	if i <= 0 {
		return "", "", false
	}
	j := strings.IndexByte(rest[i+1:], '.')
	if j < 0 {
		if len(rest) == i+1 {
			return "", "", false
		}
		return rest, "", true
	}
	topic = rest[i+2+j:]
	if j == 0 || topic == "" || topic[0] == '.' || topic[len(topic)-1] == '.' || strings.Contains(topic, "..") {
		// An empty token (NATS does not store such subjects; a fuzz
		// target found that Split took "p.a.b." for p.a.b).
		return "", "", false
	}
	return rest[:i+1+j], topic, true
}

// TopicMatches reports whether an event's topic is in a session's filter:
// no topics means every topic, else topic T matches T and T.anything.
func TopicMatches(topics []string, topic string) bool {
	if len(topics) == 0 {
		return true
	}
	for _, t := range topics {
		if topic == t || (len(topic) > len(t) && topic[len(t)] == '.' && topic[:len(t)] == t) {
			return true
		}
	}
	return false
}
