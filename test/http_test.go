package e2e_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// httpClient is a plain client: no proxy, no transparent gzip.
var httpClient = &http.Client{Transport: &http.Transport{
	Proxy:               nil,
	DisableCompression:  true,
	MaxIdleConnsPerHost: 16,
}}

// get is a GET that does not hang a test.
func get(t *testing.T, url string, hdr map[string]string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	c := *httpClient
	c.Timeout = waitShort
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// expectError checks a {"error":"…"} JSON response with status.
func expectError(t *testing.T, what string, resp *http.Response, body []byte, status int) {
	t.Helper()
	if resp.StatusCode != status {
		t.Errorf("%s: status %d, want %d (body %s)", what, resp.StatusCode, status, body)
		return
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("%s: Content-Type %q, want application/json", what, ct)
	}
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Errorf("%s: body is not JSON: %q", what, body)
		return
	}
	msg, ok := m["error"].(string)
	if len(m) != 1 || !ok || msg == "" {
		t.Errorf("%s: body %s, want exactly {\"error\": \"<message>\"}", what, body)
	}
}

// metric returns the value of one sample of base's GET /metrics: name is
// the metric name, with its labels as the relay writes them for a labelled
// sample (`sserelay_x_total{reason="y"}`). A missing sample fails the test.
func metric(t *testing.T, base, name string) float64 {
	t.Helper()
	resp, body := get(t, base+"/metrics", nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %s", resp.StatusCode, body)
	}
	for line := range strings.SplitSeq(string(body), "\n") {
		v, ok := strings.CutPrefix(line, name+" ")
		if !ok {
			v, ok = strings.CutPrefix(line, name+"{} ")
		}
		if ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric line %q: %v", line, err)
			}
			return f
		}
	}
	t.Fatalf("metric %s not in /metrics:\n%s", name, body)
	return 0
}
