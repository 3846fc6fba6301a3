//go:build linux

package relay

import (
	"runtime"
	"strings"
	"testing"
	"time"
)

// sessionGoroutines counts the goroutines that serve or watch a stream.
func sessionGoroutines() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	n := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "relay.(*session)") {
			n++
		}
	}
	return n
}

// waitUntil polls cond; the timeout is a hang guard, not a measure.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within 15 s: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestIdleStreamsHaveNoGoroutine: on Linux an idle taken-over stream is
// parked: no goroutine serves or watches it, yet its events (written by the
// dispatcher), its keepalives (by the keepalives) and its end (the client
// leaving or sending bytes, noticed by the poller) all still happen.
func TestIdleStreamsHaveNoGoroutine(t *testing.T) {
	const keepalive = 400 * time.Millisecond
	e := newEnv(t, withConfig(func(c *Config) { c.Keepalive = keepalive }))
	users := []string{"alice", "bob", "carol", "dave"}
	streams := make([]*arrivals, len(users))
	for i, u := range users {
		streams[i] = openArrivals(t, e, "app_id=demo", token(t, u), "")
		streams[i].waitFor(t, "sserelay.connected", 1)
	}
	waitUntil(t, "no goroutine per idle stream", func() bool { return sessionGoroutines() == 0 })

	for i, u := range users {
		e.publish("sse.demo."+u, "for "+u)
		streams[i].waitFor(t, "data: for "+u, 1)
	}
	for _, a := range streams {
		a.waitFor(t, ": keepalive", 2)
	}
	if n := sessionGoroutines(); n != 0 {
		t.Logf("%d session goroutines right after events and keepalives (they may still be returning)", n)
	}
	waitUntil(t, "no goroutine once the events are written", func() bool { return sessionGoroutines() == 0 })

	// A client that closes its connection, and one that sends bytes after
	// its request: the poller ends both streams, and only those.
	streams[0].conn.Close()
	if _, err := streams[1].conn.Write([]byte("GET / HTTP/1.1\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "two streams closed", func() bool { return e.relay.OpenStreams() == len(users)-2 })
	<-streams[1].done // the relay closed it
	waitUntil(t, "one close counted as a protocol violation, one as the client gone", func() bool {
		return e.metric(`sserelay_streams_closed_total{reason="protocol-violation"}`) == 1 &&
			e.metric(`sserelay_streams_closed_total{reason="client-gone"}`) == 1
	})
	e.publish("sse.demo.carol", "still here")
	streams[2].waitFor(t, "data: still here", 1)
}
