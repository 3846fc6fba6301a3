package subject

import (
	"strings"
	"testing"
)

func TestValidToken(t *testing.T) {
	good := []string{"u1", "user-42", "Ünïcode", "_all", "a_b~c", strings.Repeat("x", MaxTokenLen)}
	bad := []string{"", "a.b", "*", "a*", ">", "a>", "a b", "a\tb", "a\nb", "a\rb", "a\x00b", "a\x7fb", "a\u00a0b", "a\u2028b", "\xff", strings.Repeat("x", MaxTokenLen+1)}
	for _, s := range good {
		if !ValidToken(s) {
			t.Errorf("ValidToken(%q) = false", s)
		}
	}
	for _, s := range bad {
		if ValidToken(s) {
			t.Errorf("ValidToken(%q) = true", s)
		}
	}
}

func TestValidTopic(t *testing.T) {
	for _, s := range []string{"orders", "orders.eu", "a.b.c"} {
		if !ValidTopic(s) {
			t.Errorf("ValidTopic(%q) = false", s)
		}
	}
	for _, s := range []string{"", ".", "a.", ".a", "a..b", "a.*", "a.>", "a b", "a.b\n"} {
		if ValidTopic(s) {
			t.Errorf("ValidTopic(%q) = true", s)
		}
	}
}
