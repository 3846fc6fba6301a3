package relay

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sserelay/sserelay/relay/sse"
)

// A session is one open SSE stream.
type session struct {
	r      *Relay
	connID string
	user   string
	app    string
	keys   []string // registry keys "<app>.<feed>"
	feeds  []string
	topics []string

	// Filled by the dispatcher under mu; drained by the writer.
	mu         sync.Mutex
	queue      []*frame
	queueBytes int
	overflow   bool
	conn       net.Conn      // the taken-over connection, for hub.abortAll
	wake       chan struct{} // capacity 1: "the queue changed"
	ctl        chan struct{} // capacity 1: "look at the flags and the context"

	keepaliveDue atomic.Bool
	expired      atomic.Bool

	// wmu is held by whoever writes to the client: the session's goroutine
	// at all times except while it waits for work, and the dispatcher when
	// it writes an event straight to an idle connection. It guards the
	// fields below.
	wmu      sync.Mutex
	raw      syscall.RawConn // for the dispatcher's non-blocking writes; nil on HTTP/2
	partial  []byte          // the unwritten rest of such a write, written first by the session
	out      sink
	lastSent uint64 // resume position: the client has every event of its filter up to here
	active   bool   // something was written since the last keepalive tick (ticks come twice per interval)
	unsent   int    // bytes written since the last flush, counted when it succeeds
	spare    []*frame
	scratch  []byte // encoding buffer during a catch-up
}

// newSession returns a session of user on feeds of app, not registered yet.
func newSession(r *Relay, connID, user, app string, feeds, topics []string) *session {
	s := &session{
		r: r, connID: connID, user: user, app: app, feeds: feeds, topics: topics,
		wake: make(chan struct{}, 1), ctl: make(chan struct{}, 1),
	}
	for _, f := range feeds {
		s.keys = append(s.keys, app+"."+f)
	}
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
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// take swaps the queue for an empty one. overflow means events were dropped:
// the writer must catch up from the store.
func (s *session) take() (frames []*frame, overflow bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.overflow {
		return nil, true
	}
	frames, s.queue, s.queueBytes = s.queue, s.spare[:0], 0
	return frames, false
}

func (s *session) write(b []byte) error {
	s.active = true
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

// run streams events until the client leaves, the relay drains, the token
// expires or a write fails. lastID is the client's position (hasID false:
// none) and c the cursor at registration.
func (s *session) run(ctx context.Context, hasID bool, lastID, c uint64, expires time.Time) error {
	err := s.stream(ctx, hasID, lastID, c, expires)
	if errors.Is(err, closeDraining) {
		// Whatever it was doing: a last hint with jitter so that the clients
		// of this instance do not all come back in the same millisecond.
		if werr := s.write(appendRetry(nil, s.r.retryHint())); werr == nil {
			_ = s.flush()
		}
	}
	return err
}

func (s *session) stream(ctx context.Context, hasID bool, lastID, c uint64, expires time.Time) error {
	s.lastSent = c
	if hasID {
		s.lastSent = lastID
		if err := s.catchUp(ctx, c); err != nil {
			return err
		}
	}
	// The loop waits on two channels only: a select costs per case, and this
	// one runs once per delivery. Everything that is not an event (client
	// gone, drain, token expiry, keepalive tick) signals ctl and leaves a flag.
	stopCtx := context.AfterFunc(ctx, s.signal)
	defer stopCtx()
	tick := s.keepaliveTick()
	keepalive := time.AfterFunc(tick, func() { s.keepaliveDue.Store(true); s.signal() })
	defer keepalive.Stop()
	if !expires.IsZero() {
		t := time.AfterFunc(time.Until(expires), func() { s.expired.Store(true); s.signal() })
		defer t.Stop()
	}
	if s.r.draining.Load() {
		return closeDraining // drain began while the session registered
	}
	for {
		s.wmu.Unlock()
		var event bool
		select {
		case <-s.wake:
			event = true
		case <-s.ctl:
		}
		s.wmu.Lock()
		err := s.writePartial()
		if err == nil && event {
			err = s.writeQueued(ctx)
		} else if err == nil {
			err = s.control(ctx, keepalive, tick)
		}
		if err != nil {
			return err
		}
	}
}

// keepaliveTick is the period of the keepalive ticks: half the interval.
// A tick that finds something written since the one before only clears the
// mark, the next one writes; so the last byte written is at most one
// interval old when a comment goes out. One tick per interval would let a
// write right after a tick (the response head, say) stretch the silence to
// two intervals.
func (s *session) keepaliveTick() time.Duration {
	return max(s.r.cfg.Keepalive/2, time.Millisecond)
}

// keepalive handles one tick. Called with wmu held.
func (s *session) keepalive() error {
	if s.active {
		s.active = false
		return nil
	}
	if err := s.write(sse.AppendComment(nil, "keepalive")); err != nil { // marks it active
		return err
	}
	return s.flush()
}

// writePartial writes what the dispatcher's last direct write left over.
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
	err := s.writeFrames(frames)
	clear(frames)
	s.spare = nil
	if cap(frames) <= 64 { // a burst's large queue is not kept by an idle stream
		s.spare = frames[:0]
	}
	return err
}

// control acts on a signal that is not an event: it ends the stream (client
// gone, drain, token expiry) or handles a keepalive tick, rearming keepalive
// for tick.
func (s *session) control(ctx context.Context, keepalive *time.Timer, tick time.Duration) error {
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
	if err := s.keepalive(); err != nil {
		return err
	}
	keepalive.Reset(tick)
	return nil
}

// signal wakes the writer for something other than an event.
func (s *session) signal() {
	select {
	case s.ctl <- struct{}{}:
	default:
	}
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
func (s *session) finish(err error, start time.Time) {
	r := s.r
	r.hub.unregister(s)
	reason := reasonOf(err, r.aborted.Load())
	r.metrics.closed[reason].Inc()
	args := []any{"conn", s.connID, "user", s.user, "reason", reason.String(), "last_sent", s.lastSent, "duration", time.Since(start).Round(time.Millisecond)}
	if err != nil && err != error(reason) {
		args = append(args, "err", err)
	}
	r.log.Log(context.Background(), reason.level(), "stream closed", args...)
}
