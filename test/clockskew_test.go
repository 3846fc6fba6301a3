package e2e_test

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// TestClockSkew: a token minted by a backend whose clock is ahead of the
// relay's (nbf a second or two in the future) is accepted within the
// default --jwt-leeway, as curl sees it; with --jwt-leeway 0 it is a 401,
// on which an EventSource would give up for good.
func TestClockSkew(t *testing.T) {
	t.Parallel()
	const secret = "skew-secret"
	curlBin := tool(t, "", "curl")
	var tok string
	status := func(r *relayProc) string {
		out, err := exec.Command(curlBin, "-s", "--noproxy", "*", "-o", "/dev/null", "-w", "%{http_code}",
			"-H", "Authorization: Bearer "+tok, r.URL+"/v1/events?app_id=app&poll=1").Output()
		if err != nil {
			t.Fatalf("curl: %v", err)
		}
		return strings.TrimSpace(string(out))
	}
	lenient := startRelay(t, relayOpts{Secret: secret})
	strict := startRelay(t, relayOpts{Secret: secret, Args: []string{"--jwt-leeway", "0s"}})
	// Minted once both run: nbf 3 to 4 s ahead (it has whole seconds),
	// within the default 5 s, and still ahead when the strict one is asked.
	var err error
	claims := jwt.MapClaims{"sub": "alice", "nbf": time.Now().Add(4 * time.Second).Unix(), "exp": time.Now().Add(time.Hour).Unix()}
	tok, err = jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	if got := status(strict); got != "401" {
		t.Errorf("--jwt-leeway 0s: status %s, want 401 (nbf ahead)", got)
	}
	if got := status(lenient); got != "200" {
		t.Errorf("default leeway: status %s, want 200", got)
	}
}
