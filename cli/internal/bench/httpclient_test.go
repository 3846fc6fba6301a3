package bench

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// publishServer answers every POST like /v1/publish does.
func publishServer(tb testing.TB) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"seq":42}`)
	}))
	tb.Cleanup(srv.Close)
	return srv
}

func TestHTTPClientPublish(t *testing.T) {
	srv := publishServer(t)
	host := strings.TrimPrefix(srv.URL, "http://")
	c := &httpClient{addr: host, host: host, auth: "Bearer x"}
	defer c.close()
	for range 3 { // the same keep-alive connection
		seq, err := c.publish([]byte(`{}`))
		if err != nil || seq != 42 {
			t.Fatalf("publish = %d, %v; want 42", seq, err)
		}
	}
}

// BenchmarkPublishClient is the cost of one publish request with the load
// tool's client and with net/http's, both against the same in-process
// loopback server (its cost is in both figures).
func BenchmarkPublishClient(b *testing.B) {
	srv := publishServer(b)
	host := strings.TrimPrefix(srv.URL, "http://")
	body := []byte(`{"app_id":"bench","feed":"f","data":{"t":1,"n":0}}`)
	b.Run("bench", func(b *testing.B) {
		c := &httpClient{addr: host, host: host, auth: "Bearer x"}
		defer c.close()
		b.ReportAllocs()
		for b.Loop() {
			if _, err := c.publish(body); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("net-http", func(b *testing.B) {
		c := &http.Client{}
		b.ReportAllocs()
		for b.Loop() {
			req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/publish", bytes.NewReader(body))
			req.Header.Set("Authorization", "Bearer x")
			req.Header.Set("Content-Type", "application/json")
			resp, err := c.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}
