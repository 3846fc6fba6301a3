package subject

import (
	"errors"
	"strings"
	"testing"
)

// The errors of CheckToken and CheckTopic.
func TestCheckTokenErrors(t *testing.T) {
	for _, s := range []string{"", "a.b", "a*", "a b", strings.Repeat("x", MaxTokenLen+1)} {
		if err := CheckToken("feed", s); !errors.Is(err, ErrBadToken) {
			t.Errorf("CheckToken(%q) = %v", s, err)
		}
	}
	if err := CheckTopic("a..b"); !errors.Is(err, ErrBadToken) {
		t.Errorf("checkTopic = %v", err)
	}
}

func TestSplit(t *testing.T) {
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
		key, topic, ok := Split("sse", tt.subj)
		if key != tt.key || topic != tt.topic || ok != tt.ok {
			t.Errorf("Split(%q) = %q, %q, %v; want %q, %q, %v", tt.subj, key, topic, ok, tt.key, tt.topic, tt.ok)
		}
	}
	if s := Join("sse", "app", "u1", ""); s != "sse.app.u1" {
		t.Errorf("Join = %q", s)
	}
	if s := Join("sse", "app", "u1", "t.x"); s != "sse.app.u1.t.x" {
		t.Errorf("Join = %q", s)
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
		if got := TopicMatches(tt.topics, tt.topic); got != tt.want {
			t.Errorf("TopicMatches(%q, %q) = %v", tt.topics, tt.topic, got)
		}
	}
}

func BenchmarkSplit(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		Split("sse", "sse.myapp.user-12345.orders.eu")
	}
}
