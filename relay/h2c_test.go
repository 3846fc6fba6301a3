package relay

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sserelay/sserelay/relay/sse/ssetest"
)

// TestHTTP2Stream: over HTTP/2 (cleartext, as from a proxy sidecar) the
// connection cannot be taken over, and the stream runs inside net/http:
// events arrive as they are published, and resume works the same way.
func TestHTTP2Stream(t *testing.T) {
	e := newEnv(t)
	// A second server on the same relay that speaks h2c.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: e.relay.Handler(), Protocols: &p, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		e.relay.Drain()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	var cp http.Protocols
	cp.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &cp}
	t.Cleanup(tr.CloseIdleConnections)
	client := &http.Client{Transport: tr}

	first := e.publish("sse.demo.alice", "one")
	s, err := openURL(t, client, "http://"+ln.Addr().String()+"/v1/events?app_id=demo&last_event_id="+itoa(first-1), bearer(token(t, "alice")))
	if err != nil {
		t.Fatal(err)
	}
	if resp := s.Resp; resp.ProtoMajor != 2 || resp.Header.Get("X-Connection-Id") == "" {
		t.Fatalf("got %s %d, X-Connection-Id %q", resp.Proto, resp.StatusCode, resp.Header.Get("X-Connection-Id"))
	}
	s.Connected(t)
	s.ExpectIDs(t, first) // replayed
	live := e.publish("sse.demo.alice", "two")
	ev := s.MustNext(t)
	if ev.ID != itoa(live) || !strings.Contains(ev.Data, "two") {
		t.Fatalf("live event over HTTP/2: %+v", ev)
	}
	if n := e.relay.OpenStreams(); n != 1 {
		t.Fatalf("open streams %d, want 1", n)
	}

	// A GET whose HEADERS frame does not end the stream (a proxy may send
	// its empty body as a DATA frame) is a stream like any other: HTTP/2
	// frames the body, so it cannot hold the connection the way an HTTP/1.1
	// body that never comes would.
	req, _ := http.NewRequest(http.MethodGet, "http://"+ln.Addr().String()+"/v1/events?app_id=demo", io.NopCloser(strings.NewReader("")))
	req.Header.Set("Authorization", "Bearer "+token(t, "alice"))
	st, err := ssetest.Open(client, req)
	if err != nil {
		t.Fatalf("HTTP/2 GET with an empty DATA frame: %v", err)
	}
	defer st.Close()
	if st.Response.ProtoMajor != 2 || st.Response.StatusCode != http.StatusOK {
		t.Fatalf("got %s %d", st.Response.Proto, st.Response.StatusCode)
	}
}
