//go:build unix

package embedded

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// lockStore takes an exclusive lock on the store directory's lock file,
// waiting for the process that holds it until ctx ends or deadline passes.
// It is flock(2): the kernel drops it when its holder exits, however it
// exits, so a killed relay never leaves a lock behind. release closes the
// file, which drops the lock.
func lockStore(ctx context.Context, dir string, deadline time.Time, log *slog.Logger) (release func(), err error) {
	path := filepath.Join(dir, lockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("embedded: store lock: %w", err)
	}
	waited := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("embedded: store lock %s: %w", path, err)
		}
		holder := lockHolder(f)
		locked := fmt.Errorf("%w: %s is held by %s (another relay or NATS server on the same store?)", ErrStoreLocked, dir, holder)
		if !waited {
			log.Warn("store directory in use, waiting for its holder to exit", "dir", dir, "holder", holder)
			waited = true
		}
		wait := min(100*time.Millisecond, time.Until(deadline))
		if wait <= 0 {
			f.Close()
			return nil, locked
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			f.Close()
			return nil, fmt.Errorf("%w: %w", locked, context.Cause(ctx))
		case <-t.C:
		}
	}
	// Who holds it, for the error of the next one that tries. Best effort:
	// the lock is what counts.
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte("pid "+strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return func() { f.Close() }, nil
}

// lockHolder reads who holds the lock, as its holder wrote it.
func lockHolder(f *os.File) string {
	b := make([]byte, 64)
	n, err := f.ReadAt(b, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return "another process"
	}
	if s := strings.TrimSpace(string(b[:n])); strings.HasPrefix(s, "pid ") {
		return s
	}
	return "another process"
}
