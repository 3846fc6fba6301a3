package relay

// The life of a stream: drain, the stream limit, release on disconnect.

import (
	"context"
	"errors"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestEventsDrain(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tok := token(t, "alice")
	wantJSON(t, do(t, http.MethodGet, e.url+"/readyz", nil, ""), `{"status":"ready"}`)
	live := e.open("app_id=demo", bearer(tok))
	live.Connected(t)
	seq := e.publish("sse.demo.alice", "x")
	live.ExpectIDs(t, seq)
	resumed := e.open("app_id=demo&last_event_id=0", bearer(tok))
	resumed.Connected(t)
	resumed.ExpectIDs(t, seq)
	e.waitOpen(2)

	e.relay.Drain()
	wantRetryOnly(t, live.ReadRest(t), "")
	wantRetryOnly(t, resumed.ReadRest(t), "")
	e.waitOpen(0)

	wantError(t, do(t, http.MethodGet, e.url+"/readyz", nil, ""), http.StatusServiceUnavailable, "not ready: draining")
	if got := e.metric("sserelay_ready"); got != 0 {
		t.Fatalf("sserelay_ready %v while draining", got)
	}
	// A new stream is sent away with 200, a retry hint and a close.
	r := e.getEvents(t, "app_id=demo", bearer(tok))
	if r.Status != http.StatusOK || r.Header.Get("Content-Type") != "text/event-stream" || r.Header.Get("Cache-Control") != "no-cache" {
		t.Fatalf("new stream while draining: %d %v", r.Status, r.Header)
	}
	wantRetryOnly(t, string(r.Body), "draining")
	if e.relay.OpenStreams() != 0 {
		t.Fatal("a stream opened while draining")
	}
	// A bad token still gets its 401: the client must not come back with it.
	wantError(t, e.getEvents(t, "app_id=demo", nil), http.StatusUnauthorized,
		"missing token: send Authorization: Bearer, the access_token parameter or the sserelay_token cookie")
}

func TestEventsMaxStreams(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *Config) { c.MaxStreams = 2 }))
	tok := token(t, "alice")
	s1 := e.open("app_id=demo", bearer(tok))
	s1.Connected(t)
	s2 := e.open("app_id=demo", bearer(tok))
	s2.Connected(t)
	r := e.getEvents(t, "app_id=demo", bearer(tok))
	if r.Status != http.StatusOK || r.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("stream over the limit: %d %v %s", r.Status, r.Header, r.Body)
	}
	wantRetryOnly(t, string(r.Body), "busy")
	if got := e.metric("sserelay_streams_shed_total"); got != 1 {
		t.Fatalf("sserelay_streams_shed_total %v, want 1", got)
	}
	if got := e.metric("sserelay_open_streams"); got != 2 {
		t.Fatalf("sserelay_open_streams %v, want 2", got)
	}
	// The limit counts open streams: closing one makes room.
	s1.Close()
	e.waitOpen(1)
	s3 := e.open("app_id=demo", bearer(tok))
	s3.Connected(t)
	seq := e.publish("sse.demo.alice", "x")
	s2.ExpectIDs(t, seq)
	s3.ExpectIDs(t, seq)
	// Polls are not streams: they are not shed.
	p := e.getEvents(t, "app_id=demo&poll=1", bearer(tok))
	if p.Status != http.StatusOK || p.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("poll at the stream limit: %d %s", p.Status, p.Body)
	}
}

func TestEventsClientDisconnectReleasesSession(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tok := token(t, "alice")
	s := e.open("app_id=demo&feed=alice&feed=team1", bearer(token(t, "alice", claimFeeds("team1"))))
	s.Connected(t)
	other := e.open("app_id=demo", bearer(tok))
	other.Connected(t)
	e.waitOpen(2)
	s.Close()
	e.waitOpen(1)
	e.relay.hub.mu.Lock()
	_, team := e.relay.hub.feeds["demo.team1"]
	n := e.relay.hub.feeds["demo.alice"].len()
	e.relay.hub.mu.Unlock()
	if team || n != 1 {
		t.Fatalf("registry after disconnect: team1 present %v, %d sessions on demo.alice", team, n)
	}
	other.Close()
	e.waitOpen(0)
	eventually(t, waitLong, "open streams metric 0", func() bool { return e.metric("sserelay_open_streams") == 0 })
	e.relay.hub.mu.Lock()
	left := len(e.relay.hub.feeds)
	e.relay.hub.mu.Unlock()
	if left != 0 {
		t.Fatalf("registry keeps %d keys with no stream open", left)
	}
}

// TestShutdownOwnsItsGoroutines: when Shutdown returns, the goroutines it
// owns have ended, not merely been told to: nothing is left waiting for a
// stream that outlives it (one inside net/http stays until the HTTP server
// closes), and after a clean drain the keepalives' goroutine is gone too.
// Not parallel: it reads the stacks of the whole test process.
func TestShutdownOwnsItsGoroutines(t *testing.T) {
	running := func(fn string) bool {
		buf := make([]byte, 1<<20)
		return strings.Contains(string(buf[:runtime.Stack(buf, true)]), fn)
	}
	const waiter = "relay.(*Relay).Shutdown.func"

	// A stream Shutdown cannot close (registered, no connection to abort).
	e := newEnv(t)
	stuck := newSession(e.relay, "conn-stuck-1", "alice", "demo", []string{"alice"}, nil)
	if _, reg := e.relay.hub.register(stuck); reg != registered {
		t.Fatalf("register: %v", reg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := e.relay.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown with a stream left: %v, want the deadline", err)
	}
	if running(waiter) || running("relay.(*hub).wait") {
		t.Error("a goroutine waits for the streams after Shutdown returned")
	}
	e.relay.hub.unregister(stuck)

	// A clean drain of taken-over streams.
	e2 := newEnv(t)
	tok := token(t, "alice")
	for range 3 {
		e2.open("app_id=demo", bearer(tok)).Connected(t)
	}
	e2.waitOpen(3)
	ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	if err := e2.relay.Shutdown(ctx2); err != nil {
		t.Fatal(err)
	}
	if running("relay.(*keepalives).run") {
		t.Error("the keepalives' goroutine still runs after Shutdown returned")
	}
}
