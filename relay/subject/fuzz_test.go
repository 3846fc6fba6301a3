package subject

import (
	"errors"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/nats-io/nats-server/v2/server"
)

// FuzzSubject checks the validators against the subjects they let through:
// parts that pass make a literal subject that NATS itself accepts, with
// exactly the tokens given, and that Split takes back apart; parts that fail
// get an ErrBadToken error. Split never panics and agrees with Join on
// whatever it accepts. Corpus: testdata/fuzz/FuzzSubject.
func FuzzSubject(f *testing.F) {
	f.Add("demo", "alice", "orders.eu", "sse.demo.alice.orders")
	f.Add("a.b", "*", ">", "sse..x")
	f.Fuzz(func(t *testing.T, app, feed, topic, raw string) {
		for _, s := range []string{app, feed} {
			ok := ValidToken(s)
			if err := CheckToken("part", s); (err == nil) != ok || (err != nil && !errors.Is(err, ErrBadToken)) {
				t.Fatalf("CheckToken(%q) = %v, ValidToken = %v", s, err, ok)
			}
			if ok && !plainToken(s) {
				t.Fatalf("ValidToken(%q) accepted a wildcard, separator, space or control character", s)
			}
		}
		if err := CheckTopic(topic); (err == nil) != ValidTopic(topic) || (err != nil && !errors.Is(err, ErrBadToken)) {
			t.Fatalf("CheckTopic(%q) = %v, ValidTopic = %v", topic, err, ValidTopic(topic))
		}
		if ValidToken(app) && ValidToken(feed) && (topic == "" || ValidTopic(topic)) {
			subj := Join("sse", app, feed, topic)
			if !server.IsValidLiteralSubject(subj) {
				t.Fatalf("Join of valid parts %q %q %q = %q, not a literal NATS subject", app, feed, topic, subj)
			}
			wantTokens := 3
			if topic != "" {
				wantTokens += strings.Count(topic, ".") + 1
			}
			if n := strings.Count(subj, ".") + 1; n != wantTokens {
				t.Fatalf("%q has %d tokens, want %d", subj, n, wantTokens)
			}
			key, top, ok := Split("sse", subj)
			if !ok || key != app+"."+feed || top != topic {
				t.Fatalf("Split(%q) = %q %q %v, want %q %q", subj, key, top, ok, app+"."+feed, topic)
			}
			if !TopicMatches([]string{topic}, topic) || (topic != "" && !TopicMatches([]string{topic}, topic+".x")) {
				t.Fatalf("topic %q does not match itself or its subtopics", topic)
			}
		}
		if key, top, ok := Split("sse", raw); ok {
			app, feed, _ := strings.Cut(key, ".")
			if app == "" || feed == "" || strings.Contains(feed, ".") || Join("sse", app, feed, top) != raw {
				t.Fatalf("Split(%q) = %q %q: not the parts of the subject", raw, key, top)
			}
		}
		_ = TopicMatches([]string{app, feed}, raw)
	})
}

// plainToken is ValidToken said another way, rune by rune, as the oracle.
func plainToken(s string) bool {
	if s == "" || len(s) > MaxTokenLen || !utf8.ValidString(s) {
		return false
	}
	return !strings.ContainsFunc(s, func(r rune) bool {
		return strings.ContainsRune(".*>", r) || unicode.IsSpace(r) || unicode.IsControl(r)
	})
}
