package relay

import (
	"errors"
	"strings"
	"testing"
)

// The rules themselves are tested in package subject; here: the errors.
func TestCheckTokenErrors(t *testing.T) {
	for _, s := range []string{"", "a.b", "a*", "a b", strings.Repeat("x", MaxTokenLen+1)} {
		if err := checkToken("feed", s); !errors.Is(err, ErrBadToken) {
			t.Errorf("checkToken(%q) = %v", s, err)
		}
	}
	if err := checkTopic("a..b"); !errors.Is(err, ErrBadToken) {
		t.Errorf("checkTopic = %v", err)
	}
}

func TestSplitSubject(t *testing.T) {
	tests := []struct {
		subj, key, topic string
		ok               bool
	}{
		{"sse.app.u1", "app.u1", "", true},
		{"sse.app.u1.orders", "app.u1", "orders", true},
		{"sse.app.u1.orders.eu", "app.u1", "orders.eu", true},
		{"sse.app", "", "", false},
		{"sse.app.", "", "", false},
		{"sse..u1", "", "", false},
		{"sse.app..x", "", "", false},
		{"other.app.u1", "", "", false},
		{"ssex.app.u1", "", "", false},
	}
	for _, tt := range tests {
		key, topic, ok := splitSubject("sse", tt.subj)
		if key != tt.key || topic != tt.topic || ok != tt.ok {
			t.Errorf("splitSubject(%q) = %q, %q, %v; want %q, %q, %v", tt.subj, key, topic, ok, tt.key, tt.topic, tt.ok)
		}
	}
	if s := Subject("sse", "app", "u1", ""); s != "sse.app.u1" {
		t.Errorf("Subject = %q", s)
	}
	if s := Subject("sse", "app", "u1", "t.x"); s != "sse.app.u1.t.x" {
		t.Errorf("Subject = %q", s)
	}
}

func TestTopicMatches(t *testing.T) {
	tests := []struct {
		topics []string
		topic  string
		want   bool
	}{
		{nil, "", true},
		{nil, "x", true},
		{[]string{"orders"}, "orders", true},
		{[]string{"orders"}, "orders.eu", true},
		{[]string{"orders"}, "ordersx", false},
		{[]string{"orders"}, "", false},
		{[]string{"orders.eu"}, "orders", false},
		{[]string{"a", "b"}, "b.c", true},
	}
	for _, tt := range tests {
		if got := topicMatches(tt.topics, tt.topic); got != tt.want {
			t.Errorf("topicMatches(%q, %q) = %v", tt.topics, tt.topic, got)
		}
	}
}

func BenchmarkSplitSubject(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		splitSubject("sse", "sse.myapp.user-12345.orders.eu")
	}
}
