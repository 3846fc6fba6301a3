// Package ssetest is a test client for event streams, in the spirit of
// net/http/httptest: it reads a stream in the background, keeps every byte
// for exact comparisons, and decodes what it got with [sse.Decoder], the
// spec decoder, so that a test sees what a browser would.
//
// Both the relay's package tests and the end-to-end tests use it.
package ssetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"sync"
	"time"

	"github.com/sserelay/sserelay/relay/sse"
)

// ErrTimeout is returned by the reading methods when their timeout passes.
// The stream stays open and a later call carries on.
var ErrTimeout = errors.New("ssetest: timeout")

// Stream is one event stream being read. Its methods are safe for
// concurrent use, except that the cursor methods (NextBlock, Next) share
// one position.
type Stream struct {
	// Response is the response whose body is the stream (nil for a stream
	// made with New).
	Response *http.Response

	body   io.ReadCloser
	cancel context.CancelFunc
	done   chan struct{}
	demand chan struct{} // on-demand streams: a reader waits for bytes
	stop   chan struct{} // closed by Close: read on until the body fails

	mu   sync.Mutex
	buf  []byte
	err  error         // why reading stopped (io.EOF: a clean end); set before done closes
	more chan struct{} // closed and replaced whenever buf grows or reading stops

	cur    sync.Mutex // the cursor: dec reads buf from pos
	dec    *sse.Decoder
	pos    int
	ddl    time.Time
	closed sync.Once
}

// Open sends req with client (nil: http.DefaultClient) and starts reading
// the response. Anything but a 200 with Content-Type text/event-stream is
// an error that carries the status and body. Close ends the request.
func Open(client *http.Client, req *http.Request) (*Stream, error) {
	if client == nil {
		client = http.DefaultClient
	}
	ctx, cancel := context.WithCancel(req.Context())
	resp, err := client.Do(req.WithContext(ctx))
	if err != nil {
		cancel()
		return nil, err
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if resp.StatusCode != http.StatusOK || mt != "text/event-stream" {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		cancel()
		return nil, &StatusError{Code: resp.StatusCode, Header: resp.Header, Body: b}
	}
	s := start(resp.Body, cancel, false)
	s.Response = resp
	return s, nil
}

// StatusError is Open's error for a response that is not an event stream.
type StatusError struct {
	Code   int
	Header http.Header
	Body   []byte
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("not an event stream: %d %s %s", e.Code, e.Header.Get("Content-Type"), bytes.TrimSpace(e.Body))
}

// New starts reading an event stream from r (a raw connection, say). Close
// closes r.
func New(r io.ReadCloser) *Stream { return start(r, func() {}, false) }

// NewOnDemand is New for a client that reads only while one of its
// methods waits for bytes (NextBlock, Next, WaitRaw), a few KiB at a
// time: between calls the stream's bytes stay in the connection, so that
// a test can play a client that stops reading.
func NewOnDemand(r io.ReadCloser) *Stream { return start(r, func() {}, true) }

func start(body io.ReadCloser, cancel context.CancelFunc, onDemand bool) *Stream {
	s := &Stream{body: body, cancel: cancel, done: make(chan struct{}), more: make(chan struct{}), stop: make(chan struct{})}
	if onDemand {
		s.demand = make(chan struct{}, 1)
	}
	s.dec = sse.NewDecoder(cursor{s})
	go s.read()
	return s
}

// want tells an on-demand stream's reader that a caller waits for bytes.
func (s *Stream) want() {
	if s.demand != nil {
		select {
		case s.demand <- struct{}{}:
		default:
		}
	}
}

// read is the stream's one goroutine; it ends when the body does (Close
// makes it).
func (s *Stream) read() {
	defer close(s.done)
	size := 32 << 10
	if s.demand != nil {
		size = 4 << 10
	}
	b := make([]byte, size)
	for {
		if s.demand != nil {
			// After Close, no demand comes: a read of what was already
			// buffered (the response head's reader holds some) must not
			// leave the goroutine waiting for one.
			select {
			case <-s.demand:
			case <-s.stop:
			}
		}
		n, err := s.body.Read(b)
		s.mu.Lock()
		s.buf = append(s.buf, b[:n]...)
		if err != nil {
			s.err = err
		}
		close(s.more)
		s.more = make(chan struct{})
		s.mu.Unlock()
		if err != nil {
			return
		}
	}
}

// Close ends the stream from the client's side and waits until reading
// has stopped. It may be called more than once.
func (s *Stream) Close() {
	s.closed.Do(func() {
		s.cancel()
		s.body.Close()
		close(s.stop) // an on-demand reader reads on to the closed body
	})
	<-s.done
}

// Done is closed when reading has stopped: the stream ended, broke or was
// closed.
func (s *Stream) Done() <-chan struct{} { return s.done }

// Err returns why reading stopped: io.EOF for a clean end of the response,
// another error for a cut connection. It is nil while the stream is open.
func (s *Stream) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Raw returns every byte received so far.
func (s *Stream) Raw() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return string(s.buf)
}

// Blocks decodes every complete block received so far, from the start of
// the stream, whatever the cursor has read.
func (s *Stream) Blocks() []sse.Block {
	d := sse.NewDecoder(bytes.NewReader([]byte(s.Raw())))
	var out []sse.Block
	for {
		b, err := d.NextBlock()
		if err != nil {
			return out
		}
		out = append(out, b)
	}
}

// WaitRaw waits until cond holds for the bytes received so far and returns
// them. It returns ErrTimeout when timeout passes first, or the stream's
// end error if it ends first.
func (s *Stream) WaitRaw(timeout time.Duration, cond func(raw string) bool) (string, error) {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		s.mu.Lock()
		raw, err, more := string(s.buf), s.err, s.more
		s.mu.Unlock()
		if cond(raw) {
			return raw, nil
		}
		if err != nil {
			return raw, err
		}
		s.want()
		select {
		case <-more:
		case <-t.C:
			return raw, ErrTimeout
		}
	}
}

// NextBlock returns the next block after the cursor, dispatched or not. It
// returns io.EOF at the clean end of the stream, ErrTimeout if timeout
// passes first (the block read so far is kept for the next call), or the
// error that cut the stream.
func (s *Stream) NextBlock(timeout time.Duration) (sse.Block, error) {
	s.cur.Lock()
	defer s.cur.Unlock()
	s.ddl = time.Now().Add(timeout)
	return s.dec.NextBlock()
}

// Next returns the next block after the cursor that dispatches an event,
// skipping the others as a browser does; errors as NextBlock.
func (s *Stream) Next(timeout time.Duration) (sse.Block, error) {
	deadline := time.Now().Add(timeout)
	for {
		b, err := s.NextBlock(time.Until(deadline))
		if err != nil || b.Dispatched {
			return b, err
		}
	}
}

// Offset returns how many bytes of the stream the cursor has parsed: after
// NextBlock returned a block, Raw()[Offset():] is what came after it.
func (s *Stream) Offset() int {
	s.cur.Lock()
	defer s.cur.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pos - s.dec.Buffered()
}

// LastEventID is the last event ID after the blocks the cursor has read:
// what a browser would send as Last-Event-ID on a reconnect.
func (s *Stream) LastEventID() string {
	s.cur.Lock()
	defer s.cur.Unlock()
	return s.dec.LastEventID()
}

// cursor is the decoder's view of the received bytes: a Read waits for
// bytes past pos until the deadline of the current NextBlock call.
type cursor struct{ s *Stream }

func (c cursor) Read(p []byte) (int, error) {
	s := c.s
	for {
		s.mu.Lock()
		if s.pos < len(s.buf) {
			n := copy(p, s.buf[s.pos:])
			s.pos += n
			s.mu.Unlock()
			return n, nil
		}
		err, more := s.err, s.more
		s.mu.Unlock()
		if err != nil {
			return 0, err
		}
		wait := time.Until(s.ddl)
		if wait <= 0 {
			return 0, ErrTimeout
		}
		s.want()
		t := time.NewTimer(wait)
		select {
		case <-more:
			t.Stop()
		case <-t.C:
			return 0, ErrTimeout
		}
	}
}
