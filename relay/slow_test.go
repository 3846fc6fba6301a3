package relay

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestWriteTimeoutClosesStalledClient: a client that reads nothing is closed
// once a write has waited WriteTimeout, and another client is unaffected.
func TestWriteTimeoutClosesStalledClient(t *testing.T) {
	e := newEnv(t, withConfig(func(c *Config) {
		c.WriteTimeout = 300 * time.Millisecond
		c.QueueEvents = 1 << 20 // no overflow: the writer itself must block
		c.QueueBytes = 1 << 30
	}))
	stalled := rsOpenRaw(t, e, "app_id=demo", bearer(token(t, "alice")), rsSmallRcvBuf)
	if _, err := rsReadUntil(stalled, 10*time.Second, func(sseEvent) bool { return true }); err != nil {
		t.Fatal(err)
	}
	bob := e.open("app_id=demo", bearer(token(t, "bob")))
	bob.Connected(t)
	big := strings.Repeat("x", 64<<10)
	var last uint64
	for range 100 { // 6.4 MB: far beyond what the socket buffers hold
		last = e.publish("sse.demo.alice", big)
	}
	e.waitCursor(last)
	deadline := time.Now().Add(20 * time.Second)
	for e.relay.OpenStreams() != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("stalled stream still open: %d streams", e.relay.OpenStreams())
		}
		time.Sleep(20 * time.Millisecond)
	}
	seq := e.publish("sse.demo.bob", "still here")
	bob.ExpectIDs(t, seq)
}

// TestShutdownAbortsStalledStream: a client that stopped reading holds its
// writer in a blocked write; Shutdown with a deadline closes its connection
// so that the stream's goroutines end (goleak checks that they did).
func TestShutdownAbortsStalledStream(t *testing.T) {
	e := newEnv(t, withConfig(func(c *Config) {
		c.WriteTimeout = time.Hour
		c.QueueEvents = 1 << 20
		c.QueueBytes = 1 << 30
	}))
	stalled := rsOpenRaw(t, e, "app_id=demo", bearer(token(t, "alice")), rsSmallRcvBuf)
	if _, err := rsReadUntil(stalled, 10*time.Second, func(sseEvent) bool { return true }); err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("x", 64<<10)
	var last uint64
	for range 100 {
		last = e.publish("sse.demo.alice", big)
	}
	e.waitCursor(last)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := e.relay.Shutdown(ctx); err == nil {
		t.Fatal("Shutdown reported a clean drain while a writer was blocked")
	}
	deadline := time.Now().Add(10 * time.Second)
	for e.relay.OpenStreams() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d streams still open after Shutdown", e.relay.OpenStreams())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
