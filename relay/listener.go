package relay

import (
	"errors"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// fdReserve is what MaxConnections 0 leaves of the open-files limit for
// everything that is not a client connection: the NATS connection and the
// embedded server's clients and routes, its store files, the log.
const fdReserve = 256

// Listener wraps ln so that at most MaxConnections connections of the
// relay's listeners are open at once (see [Config.MaxConnections]), and so that running out of
// file descriptors is logged at error level: net/http logs its accept errors
// through Server.ErrorLog, where they drown among the TLS handshake noise.
//
// Beyond the bound a new connection is accepted and closed at once rather
// than left in the kernel's backlog: the client learns within a round trip
// that it must come back (an EventSource reconnects after its retry delay, a
// load balancer tries another instance), where a listener that stops
// accepting would leave it waiting on a full backlog for its own timeout,
// and the relay would not see the flood to count it. The descriptor is held
// for microseconds.
//
// A stream taken over from net/http keeps its slot until it closes.
func (r *Relay) Listener(ln net.Listener) net.Listener {
	limit := r.cfg.MaxConnections
	if limit == 0 {
		limit = -1
		var rl syscall.Rlimit
		if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err == nil && rl.Cur < 1<<31 {
			limit = max(int(rl.Cur)-fdReserve, 16)
		}
	}
	r.log.Info("connection limit", "addr", ln.Addr().String(), "max_connections", limit)
	return &limitListener{Listener: ln, r: r, limit: int64(limit), open: &r.openConns}
}

type limitListener struct {
	net.Listener
	r     *Relay
	limit int64         // -1: none
	open  *atomic.Int64 // the relay's, shared by its listeners

	logMu   sync.Mutex
	lastLog time.Time
	muted   int // errors not logged since lastLog
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				l.r.metrics.acceptErrors.Inc()
				l.logRateLimited("out of file descriptors: new connections wait (raise the open-files limit, or lower --max-connections)", err)
			}
			return nil, err // net/http backs off and retries temporary errors
		}
		if n := l.open.Add(1); l.limit >= 0 && n > l.limit {
			l.open.Add(-1)
			_ = c.Close()
			l.r.metrics.connRefused.Inc()
			l.logRateLimited("connection limit reached: new connections are closed", nil)
			continue
		}
		l.r.metrics.connOpen.Inc()
		return &limitConn{Conn: c, l: l}, nil
	}
}

// logRateLimited logs at error level at most once a second, with the
// number of events it did not log since.
func (l *limitListener) logRateLimited(msg string, err error) {
	l.logMu.Lock()
	now := time.Now()
	if now.Sub(l.lastLog) < time.Second {
		l.muted++
		l.logMu.Unlock()
		return
	}
	muted := l.muted
	l.lastLog, l.muted = now, 0
	l.logMu.Unlock()
	args := []any{"addr", l.Addr().String(), "open", l.open.Load(), "limit", l.limit, "not_logged", muted}
	if err != nil {
		args = append(args, "err", err)
	}
	l.r.log.Error(msg, args...)
}

// limitConn gives its slot back when it closes, once.
type limitConn struct {
	net.Conn
	l    *limitListener
	once sync.Once
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.l.open.Add(-1)
		c.l.r.metrics.connOpen.Dec()
	})
	return err
}

// SyscallConn exposes the socket, for the dispatcher's non-blocking writes.
func (c *limitConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, errors.ErrUnsupported
}

// CloseWrite lets net/http half-close, as it does on a *net.TCPConn.
func (c *limitConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// limitBody bounds the time to receive a request's body: a client that
// announces one and sends nothing would otherwise hold the connection for
// ever (net/http waits for the rest of an unread body before it answers).
// Requests without a body get no read deadline, so none can cut a stream or
// cancel a long handler (net/http's background read cancels the request
// when its read fails).
func (r *Relay) limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.ContentLength != 0 { // -1: chunked, or HTTP/2 with data frames to come
			_ = http.NewResponseController(w).SetReadDeadline(time.Now().Add(r.cfg.BodyTimeout))
		}
		next.ServeHTTP(w, req)
	})
}
