package relay

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
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
