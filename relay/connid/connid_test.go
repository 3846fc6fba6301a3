package connid

import (
	"strings"
	"testing"
)

func TestValid(t *testing.T) {
	for _, tc := range []struct {
		id   string
		want bool
	}{
		{"abcdefgh", true},
		{"A-b_0123456789", true},
		{strings.Repeat("x", 64), true},
		{"abcdefg", false},
		{strings.Repeat("x", 65), false},
		{"abcd efgh", false},
		{"abcd/efgh", false},
		{"abcdéfgh", false},
		{"", false},
	} {
		if got := Valid(tc.id); got != tc.want {
			t.Errorf("Valid(%q) = %v, want %v", tc.id, got, tc.want)
		}
	}
}

func TestNewIsValidAndUnique(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := New()
		if !Valid(id) || len(id) != 22 {
			t.Fatalf("New() = %q: not a valid 22-character id", id)
		}
		if seen[id] {
			t.Fatalf("New() repeated %q", id)
		}
		seen[id] = true
	}
}
