package relay

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sserelay/sserelay/relay/sse"
)

// A session is one open SSE stream.
//
// On a taken-over connection on Linux an idle session has no goroutine: it
// is parked, and whatever gives it work (an event queued, a partial direct
// write, the client leaving, drain, token expiry) borrows one through kick,
// which runs step until nothing is left and parks again. Elsewhere (HTTP/2,
// other systems) its goroutine waits for the same kicks on two channels.
type session struct {
	r      *Relay
	connID string
	user   string
	keys   []string // registry keys "<app>.<feed>", which hold the app and the feeds
	topics []string

	start  int64                   // keepalives.now() when the stream opened
	ctx    context.Context         // ends when the client leaves
	cancel context.CancelCauseFunc // the cause closeProtocolViolation: it sent bytes

	// Filled by the dispatcher under mu; drained by the writer.
	mu         sync.Mutex
	queue      []*frame
	queueBytes int
	overflow   bool
	fanned     bool     // handed to a fan-out goroutine, which will write the queue
	conn       net.Conn // the taken-over connection, for hub.abortAll

	kicked       atomic.Bool // a kick since the last step began
	parks        atomic.Bool // idle means no goroutine: set before the session can park
	parked       atomic.Bool // no goroutine serves the session; kick borrows one
	keepaliveDue atomic.Bool
	expired      atomic.Bool
	expIdx       int32                  // index in the hub's expiries, under its mu
	kaSlot       int32                  // the keepalives' slot number, under their mu
	lastWrite    *atomic.Int64          // keepalives.now() at the last write to the client: the keepalives' slot; nil when not watched
	pollID       uint64                 // key in the poller, under its mu; 0: not polled
	waiter       atomic.Pointer[waiter] // the session's own goroutine waits here (wait); nil while parked
	release      func()                 // closes the connection and stops watching it; run by end

	// wmu is held by whoever writes to the client: the session's goroutine
	// while it has one and is not waiting for work, the dispatcher when it
	// writes an event straight to an idle connection, the keepalives when
	// they write a comment to one. It guards the fields below. A session
	// that ended keeps it held: nobody writes to it any more.
	wmu      sync.Mutex
	raw      syscall.RawConn // for non-blocking writes; nil on HTTP/2
	partial  []byte          // the unwritten rest of such a write, written first by the session
	out      sink
	lastSent uint64 // resume position: the client has every event of its filter up to here
	unsent   int    // bytes written since the last flush, counted when it succeeds
	spare    []*frame
}

// A waiter is where a session served by its own goroutine (HTTP/2, no
// poller) sleeps between kicks; a parked session needs none.
type waiter struct{ c chan struct{} } // capacity 1

// newSession returns a session of user on feeds of app, not registered yet.
func newSession(r *Relay, connID, user, app string, feeds, topics []string) *session {
	s := &session{r: r, connID: connID, user: user, expIdx: -1, keys: make([]string, len(feeds))}
	for i, f := range feeds {
		s.keys[i] = app + "." + f
	}
	// Values from the query are parts of the request line: a copy keeps
	// the line from living as long as the stream.
	for i, t := range topics {
		topics[i] = strings.Clone(t)
	}
	s.topics = topics
	return s
}

// queueLimits bound the events waiting for one session.
type queueLimits struct{ events, bytes int }

// enqueue appends f to the queue, or drops the whole queue and marks the
// overflow when f does not fit within lim. It never blocks on the writer.
func (s *session) enqueue(f *frame, lim queueLimits) {
	s.mu.Lock()
	if !s.overflow {
		if len(s.queue) >= lim.events || s.queueBytes+len(f.buf) > lim.bytes {
			clear(s.queue)
			s.queue, s.queueBytes, s.overflow = s.queue[:0], 0, true
		} else {
			s.queue = append(s.queue, f)
			s.queueBytes += len(f.buf)
		}
	}
	s.mu.Unlock()
	s.kick()
}

// kick tells the session it has work: its queue changed, or a flag or its
// context wants a look (one flag for both, because step does all the work
// whatever the reason; two channels per stream were a fifth of an idle
// stream's heap). A parked session gets a goroutine; one that has a
// goroutine finds the flag when it next waits or parks. It never blocks.
func (s *session) kick() {
	s.kicked.Store(true)
	// A waiter stored after this load finds kicked set (wait).
	if w := s.waiter.Load(); w != nil {
		select {
		case w.c <- struct{}{}:
		default:
		}
	}
	if s.parked.CompareAndSwap(true, false) {
		go s.resume()
	}
}

// signal wakes the writer for something other than an event.
func (s *session) signal() { s.kick() }

// take swaps the queue for an empty one. overflow means events were dropped:
// the writer must catch up from the store.
func (s *session) take() (frames []*frame, overflow bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.overflow {
		return nil, true
	}
	if len(s.queue) == 0 {
		return nil, false
	}
	frames, s.queue, s.queueBytes = s.queue, s.spare[:0], 0
	return frames, false
}

// touch records a write to the client, for the keepalives.
// Called with wmu held.
func (s *session) touch() {
	if s.lastWrite != nil {
		s.lastWrite.Store(s.r.keepalives.now())
	}
}

func (s *session) write(b []byte) error {
	s.touch()
	s.unsent += len(b)
	return s.out.write(b)
}

func (s *session) flush() error {
	err := s.out.flush(s.r.cfg.WriteTimeout)
	if err == nil && s.unsent > 0 {
		s.r.metrics.bytes.Add(float64(s.unsent)) // one add per batch, not per event
	}
	s.unsent = 0
	return err
}

// writeFrames writes the frames the client does not have yet and flushes.
func (s *session) writeFrames(frames []*frame) error {
	n := 0
	for _, f := range frames {
		if f.seq <= s.lastSent {
			continue // the client has it: its id came from a relay that was ahead, or from a replay
		}
		if err := s.write(f.buf); err != nil {
			return err
		}
		s.lastSent = f.seq
		n++
	}
	if n == 0 {
		return nil
	}
	s.r.metrics.delivered.Add(float64(n))
	return s.flush()
}

// begin starts the stream after its first bytes: the catch-up when the
// client sent an id, the expiry timer. lastID is the client's position
// (hasID false: none) and c the cursor at registration. Called with wmu
// held, before the session can park.
func (s *session) begin(hasID bool, lastID, c uint64, expires time.Time) error {
	s.lastSent = c
	if hasID {
		s.lastSent = lastID
		if err := s.catchUp(s.ctx, c); err != nil {
			return err
		}
	}
	if !expires.IsZero() {
		s.r.hub.expiries.add(s, expires)
	}
	if s.r.draining.Load() {
		return closeDraining // drain began while the session registered
	}
	return nil
}

// wait serves the session on its own goroutine until it ends: it sleeps
// on one channel between kicks. Called with wmu held.
func (s *session) wait() error {
	w := &waiter{c: make(chan struct{}, 1)}
	s.waiter.Store(w)
	for {
		// A kick sets kicked before it looks for the waiter: one that
		// missed the waiter is seen here, the others leave a token.
		if !s.kicked.Swap(false) {
			s.wmu.Unlock()
			<-w.c
			s.wmu.Lock()
			s.kicked.Store(false)
		}
		if err := s.step(); err != nil {
			return err
		}
	}
}

// serveParked does the session's work on the calling goroutine and parks
// the session when none is left, returning the goroutine; it ends the
// session on an error. Called with wmu held.
func (s *session) serveParked() {
	for {
		// Kicks before this see their work done by the step; those after
		// it leave the flag for the check below.
		s.kicked.Store(false)
		if err := s.step(); err != nil {
			s.end(err)
			return
		}
		s.wmu.Unlock()
		s.parked.Store(true)
		// A kick after the step began saw no parked session: take the work
		// back unless a later kick already started another goroutine.
		if !s.kicked.Load() || !s.parked.CompareAndSwap(true, false) {
			return
		}
		s.wmu.Lock()
	}
}

// resume is the goroutine a kick borrows for a parked session.
func (s *session) resume() {
	s.wmu.Lock()
	s.serveParked()
}

// step does whatever the session has to do: the rest of a direct write,
// the queued events (or a catch-up after an overflow), then the signals
// that are not events. Called with wmu held.
func (s *session) step() error {
	if err := s.writePartial(); err != nil {
		return err
	}
	if err := s.writeQueued(s.ctx); err != nil {
		return err
	}
	return s.control(s.ctx)
}

// end closes the stream after err: a drain's last retry hint, then the
// connection, the timers and the registrations. wmu stays held.
func (s *session) end(err error) {
	if errors.Is(err, closeDraining) || reasonOf(err, false) == closeStoreError {
		// Whatever it was doing: a last hint with jitter so that the clients
		// of this instance (or of a store outage: every resume fails at
		// once) do not all come back in the same millisecond.
		if werr := s.write(appendRetry(nil, s.r.retryHint())); werr == nil {
			_ = s.flush()
		}
	}
	s.r.hub.expiries.remove(s)
	s.r.keepalives.remove(s)
	s.finish(err)
	if s.release != nil {
		s.release()
	}
}

// keepaliveComment is the comment written on a stream that is silent.
var keepaliveComment = sse.AppendComment(nil, "keepalive")

// keepalive writes a keepalive comment if nothing was written for most of
// the interval. Called with wmu held.
func (s *session) keepalive() error {
	if !s.r.keepalives.silent(s) {
		return nil
	}
	if err := s.write(keepaliveComment); err != nil {
		return err
	}
	return s.flush()
}

// writePartial writes what the last direct write left over.
func (s *session) writePartial() error {
	if len(s.partial) == 0 {
		return nil
	}
	err := s.write(s.partial)
	s.partial = nil
	if err == nil {
		err = s.flush()
	}
	return err
}

// writeQueued writes the queued events, or catches up from the store when
// the queue overflowed.
func (s *session) writeQueued(ctx context.Context) error {
	frames, overflow := s.take()
	if overflow {
		s.r.metrics.overflows.Add(1)
		return s.catchUp(ctx, s.r.hub.restart(s))
	}
	if frames == nil {
		return nil
	}
	err := s.writeFrames(frames)
	clear(frames)
	s.spare = nil
	if cap(frames) <= 64 { // a burst's large queue is not kept by an idle stream
		s.spare = frames[:0]
	}
	return err
}

// control acts on the signals that are not events: it ends the stream
// (client gone, drain, token expiry) or writes a keepalive that the
// keepalives asked for.
func (s *session) control(ctx context.Context) error {
	switch {
	case ctx.Err() != nil:
		if errors.Is(context.Cause(ctx), closeProtocolViolation) {
			return closeProtocolViolation
		}
		return closeClientGone
	case s.r.draining.Load():
		return closeDraining
	case s.expired.Load():
		b := sse.AppendMessage(nil, EventTokenExpired, []byte(`{"reason":"token expired"}`))
		if err := s.write(b); err == nil {
			_ = s.flush()
		}
		return closeTokenExpired
	}
	if !s.keepaliveDue.Swap(false) {
		return nil
	}
	return s.keepalive()
}

// A frame is one encoded event, shared by every session that receives it:
// the dispatcher encodes once per event, never per recipient.
type frame struct {
	seq uint64
	buf []byte // the complete SSE block
}

func resetFrame(seq uint64, reason string) *frame {
	return &frame{seq: seq, buf: sse.AppendEvent(nil, seq, EventReset, []byte(`{"reason":"`+reason+`"}`))}
}

// finish unregisters the session and logs why it ended.
func (s *session) finish(err error) {
	r := s.r
	r.hub.unregister(s)
	reason := reasonOf(err, r.aborted.Load())
	r.metrics.closed[reason].Inc()
	if !r.log.Enabled(context.Background(), reason.level()) {
		return // the arguments were allocations on every stream
	}
	args := []any{"conn", s.connID, "user", s.user, "reason", reason.String(), "last_sent", s.lastSent, "duration", time.Duration(r.keepalives.now() - s.start).Round(time.Millisecond)}
	if err != nil && err != error(reason) {
		args = append(args, "err", err)
	}
	r.log.Log(context.Background(), reason.level(), "stream closed", args...)
}
