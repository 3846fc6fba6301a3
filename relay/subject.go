package relay

import (
	"errors"
	"fmt"
	"strings"

	"github.com/sserelay/sserelay/relay/subject"
)

// MaxTokenLen bounds one subject token (app, feed or topic part).
const MaxTokenLen = subject.MaxTokenLen

// ErrBadToken is wrapped by every subject validation error.
var ErrBadToken = errors.New("invalid subject token")

// ValidToken reports whether s can be used as one NATS subject token; see
// [subject.ValidToken].
func ValidToken(s string) bool { return subject.ValidToken(s) }

// ValidTopic reports whether s is one or more valid tokens joined by '.'.
func ValidTopic(s string) bool { return subject.ValidTopic(s) }

func checkToken(kind, s string) error {
	if !ValidToken(s) {
		return fmt.Errorf("%w: %s %q must be 1 to %d characters without '.', '*', '>', whitespace or control characters", ErrBadToken, kind, s, MaxTokenLen)
	}
	return nil
}

func checkTopic(s string) error {
	if !ValidTopic(s) {
		return fmt.Errorf("%w: topic %q must be tokens of 1 to %d characters joined by '.', without '*', '>', whitespace or control characters", ErrBadToken, s, MaxTokenLen)
	}
	return nil
}

// Subject returns the NATS subject of an event: <prefix>.<app>.<feed>[.<topic>].
func Subject(prefix, app, feed, topic string) string {
	if topic == "" {
		return prefix + "." + app + "." + feed
	}
	return prefix + "." + app + "." + feed + "." + topic
}

// splitSubject splits <prefix>.<app>.<feed>[.<topic…>] into the registry key
// "<app>.<feed>" and the topic. Both are substrings of subj: no allocation on
// the dispatch path.
func splitSubject(prefix, subj string) (key, topic string, ok bool) {
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
	if j == 0 {
		return "", "", false
	}
	return rest[:i+1+j], rest[i+2+j:], true
}

// topicMatches reports whether an event's topic is in a session's filter:
// no topics means every topic, else topic T matches T and T.anything.
func topicMatches(topics []string, topic string) bool {
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
