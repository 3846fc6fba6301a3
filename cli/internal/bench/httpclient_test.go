package bench

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
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

// rawPublishServer answers each request on a connection with a fixed
// {"seq":42}, reading and writing without allocating, and counts the
// connections it accepts.
func rawPublishServer(t *testing.T) (addr string, accepted *atomic.Int64) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	accepted = new(atomic.Int64)
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"seq\":42}\n")
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			wg.Go(func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					length := 0
					for {
						line, err := br.ReadSlice('\n')
						if err != nil {
							return
						}
						if len(line) <= 2 {
							break
						}
						if v, ok := bytes.CutPrefix(line, []byte("Content-Length: ")); ok {
							for _, d := range bytes.TrimSpace(v) {
								length = length*10 + int(d-'0')
							}
						}
					}
					if _, err := br.Discard(length); err != nil {
						return
					}
					if _, err := c.Write(resp); err != nil {
						return
					}
				}
			})
		}
	})
	return ln.Addr().String(), accepted
}

// TestHTTPClientKeepAlive: the load tool's publishers reuse one connection
// for all their requests and allocate nothing per request, so that what
// bench measures is the relay's work, not the client's.
func TestHTTPClientKeepAlive(t *testing.T) {
	addr, accepted := rawPublishServer(t)
	c := &httpClient{addr: addr, host: addr, auth: "Bearer x"}
	defer c.close()
	body := []byte(`{"app_id":"bench","feed":"f","data":{"t":1,"n":0}}`)
	publish := func() {
		if seq, err := c.publish(body); err != nil || seq != 42 {
			t.Fatalf("publish = %d, %v; want 42", seq, err)
		}
	}
	publish() // connects, sizes the buffers
	if allocs := testing.AllocsPerRun(200, publish); allocs != 0 {
		t.Errorf("%v allocations per publish, want 0", allocs)
	}
	if n := accepted.Load(); n != 1 {
		t.Errorf("%d connections for 201 publishes, want 1", n)
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
