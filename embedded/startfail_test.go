package embedded

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

// TestStartBusyPort: a client port that is taken fails Start at once with
// ErrListen and the address, instead of a wait for the ready timeout (30 s
// by default) ending in "server not ready". The ready timeout here is a
// hang guard far above what a failed bind takes.
func TestStartBusyPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	start := time.Now()
	s, err := Start(context.Background(), Options{StoreDir: t.TempDir(), Listen: ln.Addr().String(), ReadyTimeout: 60 * time.Second})
	if err == nil {
		s.Shutdown()
		t.Fatal("Start on a busy port succeeded")
	}
	if !errors.Is(err, ErrListen) || !strings.Contains(err.Error(), ln.Addr().String()) {
		t.Errorf("err %v, want ErrListen naming %s", err, ln.Addr())
	}
	t.Logf("Start failed after %v: %v", time.Since(start), err)
}

// TestStartCanceled: Start returns when its context ends, even while it
// waits for the server (here a leaf node whose hub never answers).
func TestStartCanceled(t *testing.T) {
	hub, err := net.Listen("tcp", "127.0.0.1:0") // accepts, never speaks NATS
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	s, err := Start(ctx, Options{ReadyTimeout: 60 * time.Second, Leaf: &LeafOptions{URLs: []string{"nats-leaf://" + hub.Addr().String()}}})
	if err == nil {
		s.Shutdown()
		t.Fatal("Start succeeded without a hub")
	}
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err %v, want context.Canceled", err)
	}
}
