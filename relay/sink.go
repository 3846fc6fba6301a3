package relay

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"
)

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
