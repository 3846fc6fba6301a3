package e2e_test

import (
	"net/http"
	"net/url"
	"regexp"
	"testing"
	"time"
)

// serve --metrics-listen: /metrics (with the Go runtime and process metrics)
// and pprof on their own port, and with --metrics-listen-only nothing of
// either on the public one.
func TestMetricsPort(t *testing.T) {
	t.Parallel()
	r := startRelay(t, relayOpts{Args: []string{"--metrics-listen", "127.0.0.1:0", "--metrics-pprof", "--metrics-listen-only"}})
	private := "http://" + r.waitJSON(t, "metrics listening", nil)["addr"].(string)

	alice := mintToken(t, "e2e-secret", "alice", time.Hour)
	s := openStream(t, r.URL+"/v1/events?"+url.Values{"app_id": {"app"}}.Encode(), map[string]string{"Authorization": "Bearer " + alice})
	s.connected(t)
	seq := publishCLI(t, r.NATS, "", "--app", "app", "--feed", "alice", "hello")
	s.waitID(t, seq)

	for _, path := range []string{"/metrics", "/debug/pprof/cmdline"} {
		if resp, _ := get(t, r.URL+path, nil); resp.StatusCode != http.StatusNotFound {
			t.Errorf("public GET %s: %d, want 404", path, resp.StatusCode)
		}
		if resp, _ := get(t, private+path, nil); resp.StatusCode != http.StatusOK {
			t.Errorf("private GET %s: %d, want 200", path, resp.StatusCode)
		}
	}
	// One registry: the relay's series and the process's, side by side.
	eventually(t, waitShort, "the delivery on the private /metrics", func() bool {
		_, body := get(t, private+"/metrics", nil)
		return regexp.MustCompile(`(?m)^sserelay_events_delivered_total 1$`).Match(body)
	})
	_, body := get(t, private+"/metrics", nil)
	for _, re := range []string{
		`(?m)^sserelay_open_streams 1$`,
		`(?m)^sserelay_dispatch_latency_seconds_count 1$`,
		`(?m)^go_goroutines \d+$`,
		`(?m)^process_resident_memory_bytes \S+$`,
		`(?m)^go_build_info\{`,
	} {
		if !regexp.MustCompile(re).Match(body) {
			t.Errorf("private /metrics lacks %s", re)
		}
	}
}
