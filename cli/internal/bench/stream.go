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

	start   time.Time    // when the connect began
	n       atomic.Int64 // events received so far
	last    atomic.Int64 // unix nanos of the latest event
	closing atomic.Bool  // closed by us: its end is not a failure
	err     error        // why it ended early; read after the goroutine ends
}

// Chunked body states.
const (
	csSize = iota // reading a chunk-size line
	csData        // in a chunk (or a body without chunked encoding)
	csCRLF        // after a chunk's data
	csEnd         // the last chunk was read
)

// Event kinds: the event field of a block.
const (
	kindData      = iota // no event field, or a publisher's name
	kindConnected        // sserelay.connected
	kindReset            // sserelay.reset
	kindExpired          // sserelay.token-expired
	kindReserved         // another sserelay.* event
)

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

// consume de-chunks the raw bytes in place, parses every complete line, and
// moves what is left (a partial line, a partial chunk header) to the front.
func (s *stream) consume(now int64) {
	b := s.buf
dechunk:
	for s.rStart < s.rEnd {
		switch s.cstate {
		case csSize:
			i := bytes.IndexByte(b[s.rStart:s.rEnd], '\n')
			if i < 0 {
				break dechunk
			}
			size, ok := parseHex(b[s.rStart : s.rStart+i])
			s.rStart += i + 1
			switch {
			case !ok:
				s.cstate, s.err = csEnd, errBadChunk
			case size == 0:
				s.cstate = csEnd
			default:
				s.cstate, s.chunkLeft = csData, size
			}
		case csData:
			k := min(s.chunkLeft, s.rEnd-s.rStart)
			if s.dEnd != s.rStart {
				copy(b[s.dEnd:], b[s.rStart:s.rStart+k])
			}
			s.dEnd += k
			s.rStart += k
			if s.chunkLeft -= k; s.chunkLeft == 0 {
				s.cstate = csCRLF
			}
		case csCRLF:
			if b[s.rStart] == '\n' {
				s.cstate = csSize
			}
			s.rStart++
		case csEnd:
			s.rStart = s.rEnd
		}
	}
	p := 0
	for {
		i := bytes.IndexByte(b[p:s.dEnd], '\n')
		if i < 0 {
			break
		}
		s.line(b[p:p+i], now)
		p += i + 1
	}
	if p > 0 {
		s.dEnd = copy(b, b[p:s.dEnd])
	}
	n := copy(b[s.dEnd:], b[s.rStart:s.rEnd])
	s.rStart, s.rEnd = s.dEnd, s.dEnd+n

	if s.batch > 0 {
		s.n.Add(s.batch)
		s.last.Store(now)
		s.batch = 0
		if s.onTarget != nil && len(s.got) >= s.target {
			f := s.onTarget
			s.onTarget = nil
			f(s, now)
		}
	}
	if s.connected && !s.signalled {
		s.signalled = true
		if s.conn != nil {
			_ = s.conn.SetReadDeadline(time.Time{})
		}
		s.onConnect(s, nil)
	}
}

func parseHex(b []byte) (int, bool) {
	n, digits := 0, 0
	for _, c := range b {
		var d int
		switch {
		case c >= '0' && c <= '9':
			d = int(c - '0')
		case c >= 'a' && c <= 'f':
			d = int(c-'a') + 10
		case c >= 'A' && c <= 'F':
			d = int(c-'A') + 10
		case c == ';' || c == '\r' || c == ' ':
			return n, digits > 0
		default:
			return 0, false
		}
		if digits++; digits > 8 {
			return 0, false
		}
		n = n<<4 | d
	}
	return n, digits > 0
}

// value returns a field's value: after the colon and one optional space.
func value(l []byte, n int) []byte {
	l = l[n:]
	if len(l) > 0 && l[0] == ' ' {
		l = l[1:]
	}
	return l
}

// line handles one line of the stream, as the WHATWG parser does for the
// fields this tool needs.
func (s *stream) line(l []byte, now int64) {
	if n := len(l); n > 0 && l[n-1] == '\r' {
		l = l[:n-1]
	}
	if len(l) == 0 {
		s.dispatch(now)
		return
	}
	switch l[0] {
	case 'i':
		if len(l) >= 3 && string(l[:3]) == "id:" {
			s.evID, s.evHasID = parseUint(value(l, 3))
		}
	case 'e':
		if len(l) >= 6 && string(l[:6]) == "event:" {
			switch v := value(l, 6); {
			case string(v) == "sserelay.connected":
				s.evKind = kindConnected
			case string(v) == "sserelay.reset":
				s.evKind = kindReset
			case string(v) == "sserelay.token-expired":
				s.evKind = kindExpired
			case bytes.HasPrefix(v, []byte("sserelay.")):
				s.evKind = kindReserved
			default:
				s.evKind = kindData
			}
		}
	case 'd':
		// The payload is {"t":<unix nanos>,"n":<counter>…}; only t is needed here.
		if len(l) >= 5 && string(l[:5]) == "data:" && !s.evHasT {
			if v := value(l, 5); len(v) > 5 && string(v[:5]) == `{"t":` {
				t, ok := parseUint(digits(v[5:]))
				s.evT, s.evHasT = int64(t), ok
			}
		}
	}
}

func digits(b []byte) []byte {
	for i, c := range b {
		if c < '0' || c > '9' {
			return b[:i]
		}
	}
	return b
}

func parseUint(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 20 {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if n > (math.MaxUint64-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

// dispatch ends a block (a blank line).
func (s *stream) dispatch(now int64) {
	switch s.evKind {
	case kindData:
		if s.evHasID {
			s.record(now)
		} else if s.evHasT {
			s.badSeq++ // an event of ours without id
		}
	case kindConnected:
		if !s.connected {
			s.connected = true
			if s.evHasID && !s.resume {
				s.base = s.evID
			}
		}
	case kindReset:
		s.resets++
	case kindExpired:
		s.expired++
	}
	s.evHasID, s.evKind, s.evHasT = false, kindData, false
}

func (s *stream) record(now int64) {
	seq := s.evID
	switch {
	case seq <= s.base:
		s.stale++
		return
	case seq-s.base > math.MaxUint32:
		s.badSeq++
		return
	}
	s.got = append(s.got, uint32(seq-s.base))
	s.batch++
	if s.evHasT && s.live != nil {
		lat := now - s.evT
		s.live.record(s.idx, lat)
		if s.extra != nil {
			if h := s.extra.Load(); h != nil {
				h.record(s.idx, lat)
			}
		}
	}
}
