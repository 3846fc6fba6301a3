//go:build unix

package embedded

import (
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestStoreDirLocked: a second server on a store directory that a running
// one holds must not start: two JetStream servers on one store hand out
// the same sequence numbers and overwrite each other's acknowledged events.
// It waits, within its budget, for the first one to go (a restart that
// overlaps the old process's drain), and starts once it has.
func TestStoreDirLocked(t *testing.T) {
	dir := t.TempDir()
	a, err := Start(context.Background(), Options{StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown()

	b, err := Start(context.Background(), Options{StoreDir: dir, ReadyTimeout: 500 * time.Millisecond})
	if err == nil {
		b.Shutdown()
		t.Fatal("a second server started on a store directory in use")
	}
	if !errors.Is(err, ErrStoreLocked) || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "pid "+strconv.Itoa(os.Getpid())) {
		t.Fatalf("err %v, want ErrStoreLocked naming %s and the holder's pid", err, dir)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Start(ctx, Options{StoreDir: dir}); !errors.Is(err, context.Canceled) || !errors.Is(err, ErrStoreLocked) {
		t.Fatalf("err %v, want context.Canceled and ErrStoreLocked", err)
	}

	time.AfterFunc(300*time.Millisecond, a.Shutdown)
	b, err = Start(context.Background(), Options{StoreDir: dir, ReadyTimeout: 30 * time.Second})
	if err != nil {
		t.Fatalf("the second server did not start once the first had gone: %v", err)
	}
	b.Shutdown()
	b.Shutdown() // safe twice, and releases the lock once
	c, err := Start(context.Background(), Options{StoreDir: dir, ReadyTimeout: 5 * time.Second})
	if err != nil {
		t.Fatalf("a third server after the second's shutdown: %v", err)
	}
	c.Shutdown()
}
