package e2e_test

import (
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDrainKeepsAnswering holds a drain open with a client that stopped
// reading, and checks what the contract promises meanwhile: the relay still
// listens, /readyz says 503, and a new stream gets 200, a retry hint and an
// end, instead of a refused connection.
func TestDrainKeepsAnswering(t *testing.T) {
	t.Parallel()
	const secret = "drain-secret"
	const drain = 6 * time.Second
	r := startRelay(t, relayOpts{Secret: secret, Args: []string{
		"--drain-timeout", drain.String(), "--write-timeout", "30s", "--keepalive", "1h"}})
	tok := token(t, secret, "stuck", "--app", "app", "--publish", "app")

	// A stream whose client reads nothing, behind a small receive buffer.
	c, err := net.Dial("tcp", r.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.(*net.TCPConn).SetReadBuffer(4096)
	fmt.Fprintf(c, "GET /v1/events?app_id=app HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n\r\n", tok)
	eventually(t, 10*time.Second, "the stuck stream to open", func() bool { return metric(t, r.URL, "sserelay_open_streams") == 1 })
	big := strings.Repeat("x", 60_000)
	for range 150 { // 9 MB: more than both sockets' buffers hold
		publishHTTP(t, r.URL, tok, map[string]any{"app_id": "app", "feed": "stuck", "data": big}, nil)
	}

	r.signal(t, syscall.SIGTERM)
	eventually(t, 5*time.Second, "readiness to fail", func() bool {
		resp, err := http.Get(r.URL + "/readyz")
		if err != nil {
			t.Fatalf("/readyz during the drain: %v (the listener must stay open while streams close)", err)
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	})
	// A new stream, from curl: 200, a retry hint, and the response ends.
	other := token(t, secret, "late", "--app", "app")
	cmd := exec.Command(tool(t, "", "curl"), "-sS", "-N", "--noproxy", "*", "--max-time", "5",
		"-H", "Authorization: Bearer "+other, "-D", "-", r.URL+"/v1/events?app_id=app")
	b, err := cmd.Output()
	out := strings.ReplaceAll(string(b), "\r\n", "\n")
	if err != nil {
		t.Errorf("curl during the drain: %v (it must get a whole response)", err)
	}
	if !strings.HasPrefix(out, "HTTP/1.1 200") || !strings.Contains(out, "\nretry: ") {
		t.Errorf("a new stream during the drain: want 200 and a retry hint, got %q", out)
	}
	if code := r.wait(t, drain+10*time.Second); code != 0 {
		t.Errorf("exit code after SIGTERM %d, want 0", code)
	}
}
