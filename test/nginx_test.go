package e2e_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sserelay/sserelay/test/testkit"
)

// startNginx runs Debian's nginx in the foreground as a reverse proxy to
// upstream (host:port) on a free loopback port, with the defaults an
// operator starts from (proxy_buffering on, HTTP/1.0 to the upstream) and a
// short proxy_read_timeout. It returns the proxy's base URL and its error log.
func startNginx(t *testing.T, upstream string, readTimeout time.Duration) (string, string) {
	t.Helper()
	nginx := tool(t, "SSERELAY_NGINX", "/usr/sbin/nginx", "nginx")
	dir := t.TempDir()
	port := testkit.FreePort(t)
	errLog := filepath.Join(dir, "error.log")
	conf := fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
pid %[1]s/nginx.pid;
error_log %[2]s info;
events { worker_connections 64; }
http {
    access_log %[1]s/access.log;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    server {
        listen 127.0.0.1:%[3]d;
        location / {
            proxy_pass http://%[4]s;
            proxy_read_timeout %[5]ds;
        }
    }
}
`, dir, errLog, port, upstream, int(readTimeout.Seconds()))
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(nginx, "-p", dir, "-e", errLog, "-c", confPath)
	p := startProc(t, "nginx", cmd)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	eventually(t, waitLong, "nginx to proxy /healthz", func() bool {
		if p.exited() {
			b, _ := os.ReadFile(errLog)
			t.Fatalf("nginx exited: %v\n%s\n%s", p.err, p.stderr.String(), b)
		}
		resp, err := httpClient.Get(base + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	// Hang guard: a proxy that holds a response would block the stream
	// reader (and the test) for good; killing nginx ends it.
	guard := time.AfterFunc(2*time.Minute, p.kill)
	t.Cleanup(func() {
		guard.Stop()
		if t.Failed() {
			b, _ := os.ReadFile(errLog)
			t.Logf("nginx error log:\n%s", b)
		}
	})
	return base, errLog
}

// TestNginxDefaultProxy: behind an nginx with buffering on, events arrive
// while the stream is open (X-Accel-Buffering: no; without it nginx holds
// them until its buffer fills or the stream ends), and a stream idle for
// twice proxy_read_timeout stays open (keepalive comments) and still
// delivers.
func TestNginxDefaultProxy(t *testing.T) {
	t.Parallel()
	const secret = "nginx-secret"
	const readTimeout = 3 * time.Second
	r := startRelay(t, relayOpts{Secret: secret, Args: []string{"--keepalive", "1s"}})
	base, errLog := startNginx(t, r.Addr, readTimeout)
	tok := token(t, secret, "alice", "--app", "app", "--publish", "app")

	s := openStream(t, base+"/v1/events?app_id=app", map[string]string{"Authorization": "Bearer " + tok})
	if got := s.resp.Header.Get("X-Accel-Buffering"); got != "" {
		t.Errorf("nginx passed X-Accel-Buffering %q on to the client; it should consume it", got)
	}
	s.connected(t)
	e1 := publishHTTP(t, r.URL, tok, map[string]any{"app_id": "app", "feed": "alice", "data": "first"}, nil)
	s.waitID(t, e1) // fails (stream still open, event held) when nginx buffers

	// Idle for twice nginx's read timeout; only keepalive comments flow.
	before := len(s.raw())
	time.Sleep(2*readTimeout + time.Second)
	select {
	case <-s.Done():
		t.Fatalf("nginx cut the idle stream (%v); it got:\n%s", s.Err(), s.raw())
	default:
	}
	if idle := s.raw()[before:]; !strings.Contains(idle, ":") {
		t.Errorf("no keepalive comment while idle: %q", idle)
	}
	e2 := publishHTTP(t, r.URL, tok, map[string]any{"app_id": "app", "feed": "alice", "data": "after idle"}, nil)
	evs := dataEvents(s.waitID(t, e2))
	if len(evs) != 2 || evs[0].Data != "first" || evs[1].Data != "after idle" {
		t.Errorf("events through nginx: %+v, want first and after idle", evs)
	}
	if b, _ := os.ReadFile(errLog); strings.Contains(string(b), "upstream timed out") {
		t.Errorf("nginx timed the upstream out:\n%s", b)
	}
}
