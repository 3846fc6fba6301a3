package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"strconv"
	"sync/atomic"
	"time"
)

// A stream is one SSE client. It speaks just enough HTTP/1.1 itself (one
// request, chunked or raw body) so that a stream costs one goroutine and one
// read buffer, and parses the events in place in that buffer: no allocation
// per line or per event. The goroutine records every event's id and, for
// live streams, its latency; the checks run once it has ended.
type stream struct {
	idx    int
	feed   int    // index of the feed it reads in runner.feeds
	user   string // token sub
	query  string // request path and query
	token  string
	resume bool   // send Last-Event-ID: base
	base   uint64 // position: every event received must be above it

	conn      *net.TCPConn                // owned by the stream's goroutine
	tc        atomic.Pointer[net.TCPConn] // the same, for close from another goroutine
	buf       []byte
	dEnd      int // buf[:dEnd]: de-chunked bytes not parsed yet (a partial line)
	rStart    int // buf[rStart:rEnd]: raw bytes not de-chunked yet
	rEnd      int
	cstate    uint8
	chunkLeft int

	// The block being parsed.
	evID    uint64
	evHasID bool
	evKind  uint8
	evT     int64
	evHasT  bool

	connected bool
	signalled bool
	got       []uint32 // seq - base of every event, in arrival order
	stale     int      // events at or below base
	badSeq    int      // ids that are not decimal or too far above base
	resets    int
	expired   int
	batch     int64

	live  *hist                 // latency of live events (nil: not recorded)
	extra *atomic.Pointer[hist] // a second histogram while set (the storm window)

	target    int                       // with onTarget: call it once len(got) reaches target
	onTarget  func(s *stream, at int64) // at: unix nanos, or -1 if the stream ended first
	onConnect func(s *stream, err error)

	start    time.Time     // when the connect began
	n        atomic.Int64  // events received so far
	last     atomic.Int64  // unix nanos of the latest event
	top      atomic.Uint64 // highest id received
	comments atomic.Int64  // comment lines (keepalives) received so far
	closing  atomic.Bool   // closed by us: its end is not a failure
	err      error         // why it ended early; read after the goroutine ends
}

const maxStreamBuffer = 4 << 20

var (
	errClosedEarly = errors.New("stream closed by the relay")
	errLineTooLong = errors.New("SSE line longer than the read buffer limit")
	errBadChunk    = errors.New("bad chunk size in the response body")
)

// serve dials, sends the request, and reads the stream until it ends or is
// closed. onConnect is called once: with nil after the sserelay.connected
// event, or with the error that prevented it.
func (s *stream) serve(ctx context.Context, d *net.Dialer, addr, host string, bufSize int, timeout time.Duration) {
	s.start = time.Now()
	if err := s.handshake(ctx, d, addr, host, bufSize, timeout); err != nil {
		s.fail(err)
		return
	}
	for {
		if s.rEnd == len(s.buf) && !s.grow() {
			s.fail(errLineTooLong)
			return
		}
		n, err := s.conn.Read(s.buf[s.rEnd:])
		if n > 0 {
			s.rEnd += n
			s.consume(time.Now().UnixNano())
		}
		if err == nil && s.cstate == csEnd {
			err = errClosedEarly
		}
		if err != nil {
			if errors.Is(err, net.ErrClosed) || s.closing.Load() {
				err = nil
			} else if errors.Is(err, io.EOF) {
				err = errClosedEarly
			}
			s.fail(err)
			return
		}
	}
}

// fail ends the stream with err (nil: closed by us).
func (s *stream) fail(err error) {
	if s.conn != nil {
		_ = s.conn.Close()
	}
	if err != nil && !s.closing.Load() && s.err == nil {
		s.err = err
	}
	if !s.signalled {
		s.signalled = true
		if err == nil {
			err = errors.New("closed before connected")
		}
		s.onConnect(s, err)
	}
	if s.onTarget != nil {
		f := s.onTarget
		s.onTarget = nil
		f(s, -1)
	}
}

// close ends the stream from our side; the reset skips TIME_WAIT so that
// repeated runs do not run out of loopback ports.
func (s *stream) close() {
	s.closing.Store(true)
	if c := s.tc.Load(); c != nil {
		_ = c.SetLinger(0)
		_ = c.Close()
	}
}

func (s *stream) handshake(ctx context.Context, d *net.Dialer, addr, host string, bufSize int, timeout time.Duration) error {
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := d.DialContext(dctx, "tcp", addr)
	if err != nil {
		return err
	}
	conn, ok := c.(*net.TCPConn)
	if !ok {
		c.Close()
		return errors.New("not a TCP connection")
	}
	s.conn = conn
	s.tc.Store(conn)
	if s.closing.Load() { // closed while dialing
		return net.ErrClosed
	}
	_ = conn.SetDeadline(time.Now().Add(timeout))
	s.buf = make([]byte, bufSize)
	req := append(s.buf[:0], "GET "...)
	req = append(req, s.query...)
	req = append(req, " HTTP/1.1\r\nHost: "...)
	req = append(req, host...)
	req = append(req, "\r\nUser-Agent: sserelay-bench\r\nAccept: text/event-stream\r\nAuthorization: Bearer "...)
	req = append(req, s.token...)
	if s.resume {
		req = append(req, "\r\nLast-Event-ID: "...)
		req = strconv.AppendUint(req, s.base, 10)
	}
	req = append(req, "\r\n\r\n"...)
	if cap(req) > len(s.buf) {
		s.buf = req[:cap(req)] // grew: keep the larger buffer
	}
	if _, err := conn.Write(req); err != nil {
		return err
	}
	s.token = "" // not needed any more
	for {
		n, err := conn.Read(s.buf[s.rEnd:])
		s.rEnd += n
		if i := bytes.Index(s.buf[:s.rEnd], []byte("\r\n\r\n")); i >= 0 {
			return s.parseHead(s.buf[:i], i+4)
		}
		if err != nil {
			return err
		}
		if s.rEnd == len(s.buf) {
			return errors.New("response headers larger than the read buffer")
		}
	}
}

// parseHead checks the status and headers; body starts at buf[bodyAt].
func (s *stream) parseHead(head []byte, bodyAt int) error {
	line, rest, _ := bytes.Cut(head, []byte("\r\n"))
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return fmt.Errorf("bad status line %q", line)
	}
	status, _ := strconv.Atoi(string(line[9:12]))
	chunked, sse := false, false
	for len(rest) > 0 {
		var h []byte
		h, rest, _ = bytes.Cut(rest, []byte("\r\n"))
		k, v, _ := bytes.Cut(h, []byte(":"))
		v = bytes.TrimSpace(v)
		switch {
		case bytes.EqualFold(k, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(v, []byte("chunked"))
		case bytes.EqualFold(k, []byte("Content-Type")):
			sse = bytes.HasPrefix(v, []byte("text/event-stream"))
		}
	}
	if status != 200 {
		body := s.buf[bodyAt:s.rEnd]
		if len(body) > 160 {
			body = body[:160]
		}
		return fmt.Errorf("HTTP %d %s", status, bytes.TrimSpace(body))
	}
	if !sse {
		return errors.New("HTTP 200 without text/event-stream")
	}
	n := copy(s.buf, s.buf[bodyAt:s.rEnd])
	s.dEnd, s.rStart, s.rEnd = 0, 0, n
	if chunked {
		s.cstate = csSize
	} else {
		s.cstate, s.chunkLeft = csData, math.MaxInt
	}
	s.consume(time.Now().UnixNano())
	return nil
}

func (s *stream) grow() bool {
	if len(s.buf) >= maxStreamBuffer {
		return false
	}
	b := make([]byte, 2*len(s.buf))
	copy(b, s.buf[:s.rEnd])
	s.buf = b
	return true
}
