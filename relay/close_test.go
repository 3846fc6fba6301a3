package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestReasonOf(t *testing.T) {
	timeout := &net.OpError{Op: "write", Net: "tcp", Err: os.ErrDeadlineExceeded}
	for _, tt := range []struct {
		err     error
		aborted bool
		want    closeReason
	}{
		{nil, false, closeClientGone},
		{closeClientGone, false, closeClientGone},
		{closeDraining, true, closeDraining},
		{fmt.Errorf("catch-up: %w", closeTokenExpired), false, closeTokenExpired},
		{fmt.Errorf("write: %w", timeout), false, closeWriteTimeout},
		{fmt.Errorf("write: %w", errors.New("broken pipe")), false, closeWriteError},
		{fmt.Errorf("write: %w", errors.New("use of closed network connection")), true, closeShutdown},
		{storeFailed(errors.New("direct get: timeout")), false, closeStoreError},
		// The client went away while the relay wrote to it (a tab closed in
		// the middle of a catch-up): an ordinary end, not a failure.
		{fmt.Errorf("write: %w", &net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", syscall.EPIPE)}), false, closeClientGone},
		{fmt.Errorf("write: %w", &net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("writev", syscall.ECONNRESET)}), false, closeClientGone},
		{fmt.Errorf("write: %w", &net.OpError{Op: "write", Net: "tcp", Err: os.NewSyscallError("write", syscall.EIO)}), false, closeWriteError},
	} {
		if got := reasonOf(tt.err, tt.aborted); got != tt.want {
			t.Errorf("reasonOf(%v, %v) = %v, want %v", tt.err, tt.aborted, got, tt.want)
		}
	}
	if !errors.Is(storeFailed(context.DeadlineExceeded), context.DeadlineExceeded) {
		t.Error("a store failure does not unwrap to its cause")
	}
}

// The streams_closed_total counter, by value, for the usual ends of a stream.
func TestStreamsClosedByReason(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	closed := func(r closeReason) float64 {
		return e.metric(`sserelay_streams_closed_total{reason="` + r.String() + `"}`)
	}
	for r := range numCloseReasons {
		if n := closed(r); n != 0 {
			t.Fatalf("%v = %v before any stream", r, n)
		}
	}

	gone := e.open("app_id=demo", bearer(token(t, "alice")))
	gone.Connected(t)
	gone.Close()
	eventually(t, waitLong, "client-gone counted", func() bool { return closed(closeClientGone) == 1 })

	exp := time.Now().Add(2 * time.Second) // exp has one-second precision: 1 to 2 s from now
	expiring := e.open("app_id=demo", bearer(token(t, "bob", claimExpires(exp))))
	expiring.Connected(t)
	if ev := expiring.MustNext(t); ev.Event != EventTokenExpired {
		t.Fatalf("got %+v, want %s", ev, EventTokenExpired)
	}
	eventually(t, waitLong, "token-expired counted", func() bool { return closed(closeTokenExpired) == 1 })

	drained := e.open("app_id=demo", bearer(token(t, "carol")))
	drained.Connected(t)
	e.relay.Drain()
	eventually(t, waitLong, "draining counted", func() bool { return closed(closeDraining) == 1 })
	refused := e.open("app_id=demo", bearer(token(t, "dave"))) // sent away while draining: counted too
	_ = refused.ReadRest(t)
	eventually(t, waitLong, "refused stream counted", func() bool { return closed(closeDraining) == 2 })

	for _, r := range []closeReason{closeClientGone, closeTokenExpired} {
		if n := closed(r); n != 1 {
			t.Errorf("%v = %v, want 1", r, n)
		}
	}
	for _, r := range []closeReason{closeWriteTimeout, closeWriteError, closeStoreError, closeShutdown, closeShed} {
		if n := closed(r); n != 0 {
			t.Errorf("%v = %v, want 0", r, n)
		}
	}
}

// TestClientGoneDuringCatchUp: a client that leaves in the middle of a long
// catch-up (its connection reset under the relay's writes) is counted and
// logged as client-gone, not as a write failure an operator would alert on.
func TestClientGoneDuringCatchUp(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *Config) { c.RingEvents = -1 }))
	big := strings.Repeat("x", 8<<10)
	first := e.publish("sse.demo.alice", big)
	var last uint64
	for range 400 { // 3.2 MB: more than the socket buffers hold
		last = e.publish("sse.demo.alice", big)
	}
	e.waitCursor(last)
	h := bearer(token(t, "alice"))
	h.Set("Last-Event-ID", itoa(first))
	resp, conn := dialStream(t, e, "app_id=demo", h, smallRcvBuf)
	if _, err := io.ReadFull(resp.Body, make([]byte, 64<<10)); err != nil {
		t.Fatal(err)
	}
	_ = conn.(*net.TCPConn).SetLinger(0) // close with a reset, unread bytes and all
	conn.Close()
	closed := func(r closeReason) float64 {
		return e.metric(`sserelay_streams_closed_total{reason="` + r.String() + `"}`)
	}
	eventually(t, waitLong, "the stream to close", func() bool { return closed(closeClientGone)+closed(closeWriteError) == 1 })
	if n := closed(closeWriteError); n != 0 {
		t.Errorf("write-error = %v, want 0 (client-gone %v)", n, closed(closeClientGone))
	}
}
