package relay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"
)

// responseHead returns the head of a response we write ourselves on a
// taken-over connection, with room for the first n bytes of its body
// after it: the buffer is sized once (its growth was 3 allocations a
// stream). The body ends when the connection closes, so no chunked encoding
// is needed.
func responseHead(h http.Header, n int) []byte {
	const status, closing = "HTTP/1.1 200 OK\r\n", "Connection: close\r\n\r\n"
	n += len(status) + len(closing)
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(": \r\n") + len(v) // or less: Write trims values
		}
	}
	head := bytes.NewBuffer(make([]byte, 0, n))
	head.WriteString(status)
	_ = h.Write(head)
	head.WriteString(closing)
	return head.Bytes()
}

// serveHTTP streams inside net/http: HTTP/2, or hijacking is off.
func (s *session) serveHTTP(ctx context.Context, w http.ResponseWriter, rc *http.ResponseController, first []byte, sr *streamRequest, c uint64) {
	// The server may have a WriteTimeout for other endpoints; a stream
	// uses a deadline per write instead.
	_ = rc.SetWriteDeadline(time.Time{})
	s.ctx = ctx
	stop := context.AfterFunc(ctx, s.signal)
	s.release = func() { stop() }
	s.out = &httpSink{w: w, rc: rc, timeout: s.r.cfg.WriteTimeout}
	s.r.keepalives.add(s)
	w.WriteHeader(http.StatusOK)
	err := s.write(first)
	if err == nil {
		err = s.flush()
	}
	if err == nil {
		err = s.begin(sr.hasID, sr.lastID, c, sr.expires)
	}
	if err == nil {
		err = s.wait()
	}
	s.end(err)
}

// serveConn streams to a connection taken over from net/http, after the
// response head and first event in first. Where the poller can watch the
// connection it returns once the session parks, with nothing left to do;
// otherwise it serves the session to its end and a reader goroutine
// watches the connection.
func (s *session) serveConn(conn net.Conn, first []byte, sr *streamRequest, c uint64) {
	s.ctx, s.cancel = context.WithCancelCause(context.Background())
	_ = conn.SetReadDeadline(time.Time{})
	s.out = &connSink{conn: conn}
	if sc, ok := conn.(syscall.Conn); ok {
		s.raw, _ = sc.SyscallConn()
	}
	s.mu.Lock()
	s.conn = conn
	s.mu.Unlock()
	if s.raw != nil && s.r.poller.add(s) {
		s.parks.Store(true)
		s.release = func() {
			s.r.poller.remove(s)
			conn.Close()
			s.cancel(nil)
		}
	} else {
		readerDone := make(chan struct{})
		// The client sends nothing more: a read returns when it goes away,
		// which is how the stream learns of it without waiting for a write
		// to fail. A stream request has no body, so any byte is a protocol
		// violation that ends the stream: a client that sends megabytes
		// costs one read, where reading them one at a time cost a system
		// call each.
		go func() {
			defer close(readerDone)
			defer s.signal()
			var b [512]byte
			if n, err := conn.Read(b[:]); n > 0 || err == nil {
				s.cancel(closeProtocolViolation)
				_ = conn.Close()
				return
			}
			s.cancel(nil)
		}()
		s.release = func() {
			conn.Close() // also ends the reader
			<-readerDone
			s.cancel(nil)
		}
	}
	s.r.keepalives.add(s)
	err := s.write(first)
	if err == nil {
		err = s.flush()
	}
	if err == nil {
		err = s.begin(sr.hasID, sr.lastID, c, sr.expires)
	}
	switch {
	case err != nil:
		s.end(err)
	case s.parks.Load():
		s.serveParked()
	default:
		s.end(s.wait())
	}
}

// goneAway is how the poller tells a session that its client closed the
// connection or sent bytes after its request (a protocol violation: a
// stream request has no body); either way the stream ends. sent reports
// bytes waiting to be read.
func (s *session) goneAway(sent bool) {
	if sent {
		s.cancel(closeProtocolViolation)
	} else {
		s.cancel(nil)
	}
	s.signal()
}

// idle reports whether the dispatcher may write f straight to the client:
// nothing is queued or half written before it. Called with wmu held.
func (s *session) idle() bool {
	if s.raw == nil || len(s.partial) > 0 {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.queue) == 0 && !s.overflow
}

// writeDirect writes f without blocking, from the dispatcher, saving the
// hand-over to the session's goroutine: the common case of an idle client
// with room in its socket buffer. Called with wmu held, the session idle.
func (s *session) writeDirect(f *frame) {
	if f.seq <= s.lastSent {
		return
	}
	s.r.metrics.delivered.Add(1) // before the client can see it
	s.lastSent = f.seq
	s.writeRaw(f.buf)
}

// writeRaw writes b without blocking. What does not fit is left for the
// session's goroutine, which is kicked to write it with the usual deadline
// (and finds out about a failed write). Called with wmu held, the session
// idle.
//
// It writes inside Control, not RawConn.Write: Write refuses once the write
// deadline has passed, and the deadline of an idle stream is the one its
// last flush set, long past; so on every idle stream every direct write
// would fail and go to the session's goroutine. wmu makes it the only
// writer, which is what Write's lock would.
func (s *session) writeRaw(b []byte) {
	n := 0
	err := s.raw.Control(func(fd uintptr) {
		n = rawWrite(int(fd), b) // EAGAIN or an error: n < 0, the session finds out
	})
	if err != nil || n < 0 {
		n = 0
	}
	s.r.metrics.bytes.Add(float64(n)) // the rest is counted when the session writes it
	s.touch()
	if n < len(b) {
		s.partial = b[n:]
		s.kick()
	}
}

// A sink is where a session writes its stream. write may buffer; flush
// sends what was written, with a deadline so that a client that reads
// nothing is closed instead of holding the writer forever.
type sink interface {
	write(b []byte) error
	flush(timeout time.Duration) error
}

// httpSink writes through net/http (HTTP/2, or when hijacking is off).
type httpSink struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	timeout time.Duration
}

func (h *httpSink) write(b []byte) error {
	// The deadline goes before the write: net/http's buffer may write through.
	if err := h.rc.SetWriteDeadline(time.Now().Add(h.timeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		return fmt.Errorf("set write deadline: %w", err)
	}
	if _, err := h.w.Write(b); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

func (h *httpSink) flush(time.Duration) error {
	if err := h.rc.Flush(); err != nil {
		return fmt.Errorf("flush: %w", err)
	}
	return nil
}

// connSink writes to a connection taken over from net/http. An idle stream
// then holds no buffer at all: one is borrowed from a pool while a batch is
// written and returned right after, where net/http would keep 8 KiB of
// bufio buffers and two goroutines per connection.
type connSink struct {
	conn     net.Conn
	buf      *[]byte // nil while idle
	deadline time.Time
}

var writeBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// maxPooledBuf keeps one huge event from pinning a huge buffer in the pool.
const maxPooledBuf = 64 << 10

func (c *connSink) write(b []byte) error {
	if c.buf == nil {
		c.buf = writeBufs.Get().(*[]byte)
	}
	*c.buf = append(*c.buf, b...)
	return nil
}

func (c *connSink) flush(timeout time.Duration) error {
	if c.buf == nil {
		return nil
	}
	b := c.buf
	c.buf = nil
	defer func() {
		if cap(*b) <= maxPooledBuf {
			*b = (*b)[:0]
			writeBufs.Put(b)
		}
	}()
	// Moving the deadline costs a timer update per write, which is a good
	// part of a small write: move it only once half of it is used up. A
	// write then has between half and all of the timeout to complete.
	if now := time.Now(); c.deadline.Sub(now) < timeout/2 {
		c.deadline = now.Add(timeout)
		if err := c.conn.SetWriteDeadline(c.deadline); err != nil {
			return fmt.Errorf("set write deadline: %w", err)
		}
	}
	if _, err := c.conn.Write(*b); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}
