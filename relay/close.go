package relay

import (
	"errors"
	"log/slog"
	"net"
	"os"
	"syscall"
)

// A closeReason says why a stream ended or was sent away. It is the error a
// session's loop returns for the reasons it decides itself, the "reason"
// field of the "stream closed" log line and the reason label of
// sserelay_streams_closed_total (nats-server's ClosedState and centrifuge's
// Disconnect play the same part).
type closeReason uint8

const (
	closeClientGone        closeReason = iota // the client closed the connection or the request ended
	closeDraining                             // the relay drains: the client resumes elsewhere
	closeTokenExpired                         // the token's exp passed; sserelay.token-expired was sent
	closeWriteTimeout                         // the client read nothing within WriteTimeout
	closeWriteError                           // any other failed write to the client (not a reset or broken pipe: client-gone)
	closeStoreError                           // a resume could not read the store
	closeShutdown                             // Shutdown's deadline passed and closed the connection
	closeShed                                 // sent away before it opened: MaxStreams streams were open
	closeProtocolViolation                    // the client sent bytes after its request, which has no body
	numCloseReasons
)

var closeReasonNames = [numCloseReasons]string{
	closeClientGone:   "client-gone",
	closeDraining:     "draining",
	closeTokenExpired: "token-expired",
	closeWriteTimeout: "write-timeout",
	closeWriteError:   "write-error",
	closeStoreError:   "store-error",
	closeShutdown:     "shutdown-abort",
	closeShed:         "shed",

	closeProtocolViolation: "protocol-violation",
}

func (c closeReason) String() string {
	if c < numCloseReasons {
		return closeReasonNames[c]
	}
	return "unknown"
}

func (c closeReason) Error() string { return "stream closed: " + c.String() }

// level is the log level of a close for c: the ordinary ends of a stream
// are debug, failures warn.
func (c closeReason) level() slog.Level {
	switch c {
	case closeClientGone, closeDraining, closeTokenExpired, closeShed:
		return slog.LevelDebug
	}
	return slog.LevelWarn
}

// A closeError is a failure that ended a stream, with its reason.
type closeError struct {
	reason closeReason
	err    error
}

func (e *closeError) Error() string { return e.reason.String() + ": " + e.err.Error() }
func (e *closeError) Unwrap() error { return e.err }

// storeFailed marks err, from reading the store, as the end of a stream.
func storeFailed(err error) error { return &closeError{reason: closeStoreError, err: err} }

// reasonOf classifies the error that ended a stream. aborted reports that
// Shutdown closed the connections of the streams still open.
func reasonOf(err error, aborted bool) closeReason {
	if r, ok := err.(closeReason); ok {
		return r // most ends, without the allocation of errors.As's target
	}
	var r closeReason
	var ce *closeError
	switch {
	case err == nil:
		return closeClientGone
	case errors.As(err, &r):
		return r
	case errors.As(err, &ce):
		return ce.reason
	case aborted:
		return closeShutdown
	case isTimeout(err):
		return closeWriteTimeout
	case errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNRESET):
		// The client left while the relay wrote (mid catch-up, where no
		// poller watches for it): an ordinary end, not a failed write.
		return closeClientGone
	}
	return closeWriteError
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
}
