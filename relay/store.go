package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sserelay/sserelay/relay/sse"
)

// errNATSDown stands for the errors nats.go gives a store read made while
// the relay's connection is down. The relay buffers nothing while
// disconnected, so such a read fails with ErrReconnectBufExceeded, whose
// text ("outbound buffer limit exceeded") names a limit no operator set.
var errNATSDown = errors.New("NATS not connected")

// natsErr replaces the connection-state errors of a NATS call with
// errNATSDown and leaves the others as they are.
func natsErr(err error) error {
	switch {
	case errors.Is(err, nats.ErrReconnectBufExceeded), errors.Is(err, nats.ErrConnectionReconnecting),
		errors.Is(err, nats.ErrConnectionClosed), errors.Is(err, nats.ErrDisconnected):
		return errNATSDown
	}
	return err
}

// storeReader reads events back from the stream with batch Direct Get
// requests, one cursor per subject filter. The replies of cursor i arrive
// on <inbox>.i and are parsed as they come, in the subscription's goroutine,
// so that the store produces the next batch of a cursor while the session
// writes the current one to its client: a cursor holds at most two batches
// (the one being merged, and the next one, ready or on its way).
type storeReader struct {
	r     *Relay
	sub   *nats.Subscription
	inbox string

	mu      sync.Mutex // guards the cursors' reply state and closed
	cursors []*subjectCursor
	closed  bool
}

// newStoreReader subscribes to a fresh inbox. A plain inbox, not one under
// the connection's response wildcard, which would receive every reply of a
// batch a second time.
func (r *Relay) newStoreReader() (*storeReader, error) {
	rd := &storeReader{r: r, inbox: r.cfg.Conn.NewInbox()}
	sub, err := r.cfg.Conn.Subscribe(rd.inbox+".*", rd.onReply)
	if err != nil {
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	// The cursors bound what is pending (one request in flight each, of at
	// most ReplayBatch events and about ReplayBytes): nats.go must not drop
	// part of a batch on its own, smaller, default limits.
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	rd.sub = sub
	return rd, nil
}

func (rd *storeReader) close() {
	rd.mu.Lock()
	rd.closed = true
	rd.mu.Unlock()
	_ = rd.sub.Unsubscribe()
}

type directGetRequest struct {
	Seq        uint64 `json:"seq"`
	NextBySubj string `json:"next_by_subj,omitempty"`
	Batch      int    `json:"batch,omitempty"`
	MaxBytes   int    `json:"max_bytes,omitempty"`
}

func (rd *storeReader) directGetSubject() string {
	return rd.r.apiPfx + "DIRECT.GET." + rd.r.cfg.Stream
}

// exists reports whether the stream still holds sequence seq.
func (rd *storeReader) exists(ctx context.Context, seq uint64) (bool, error) {
	body, _ := json.Marshal(directGetRequest{Seq: seq})
	ctx, cancel := context.WithTimeout(ctx, rd.r.cfg.RequestTimeout)
	defer cancel()
	m, err := rd.r.cfg.Conn.RequestWithContext(ctx, rd.directGetSubject(), body)
	if err != nil {
		return false, fmt.Errorf("direct get %d: %w", seq, natsErr(err))
	}
	switch status := m.Header.Get("Status"); status {
	case "":
		return true, nil
	case "404":
		return false, nil
	default:
		return false, fmt.Errorf("direct get %d: status %s %s", seq, status, m.Header.Get("Description"))
	}
}

// cursor adds a cursor over the events of subject in (from, to]. With
// prefetch, it asks for the next batch as soon as it hands one out.
func (rd *storeReader) cursor(subject string, from, to uint64, prefetch bool) *subjectCursor {
	rd.mu.Lock()
	defer rd.mu.Unlock()
	c := &subjectCursor{rd: rd, subject: subject, reply: rd.inbox + "." + strconv.Itoa(len(rd.cursors)),
		to: to, prefetch: prefetch, next: from + 1, more: true, wake: make(chan struct{}, 1)}
	rd.cursors = append(rd.cursors, c)
	return c
}

// onReply takes one reply of a batch: an event, the end of the batch (204)
// or no match at all (404). It runs in the subscription's goroutine.
func (rd *storeReader) onReply(m *nats.Msg) {
	i, err := strconv.Atoi(m.Subject[len(rd.inbox)+1:])
	rd.mu.Lock()
	defer rd.mu.Unlock()
	if rd.closed || err != nil || i < 0 || i >= len(rd.cursors) {
		return
	}
	c := rd.cursors[i]
	if !c.inflight {
		return // a late reply to a request given up on
	}
	switch status := m.Header.Get("Status"); status {
	case "":
		c.addLocked(m)
	case "404": // nothing matches from here on
		c.finishLocked(false, nil)
	case "204": // end of batch: it says where it stopped, even past messages we could not decode
		if ls, err := strconv.ParseUint(m.Header.Get("Nats-Last-Sequence"), 10, 64); err == nil && ls >= c.next {
			c.next = ls + 1
		}
		pending, _ := strconv.ParseUint(m.Header.Get("Nats-Num-Pending"), 10, 64)
		c.pending = pending
		c.finishLocked(c.more && pending > 0 && c.next <= c.to, nil)
	default:
		c.finishLocked(false, fmt.Errorf("direct get %s from %d: status %s %s", c.subject, c.from, status, m.Header.Get("Description")))
	}
}

// subjectCursor walks the events of one subject filter in (from, to].
type subjectCursor struct {
	rd       *storeReader
	subject  string
	reply    string
	to       uint64
	prefetch bool

	// The merge's side, used by the session's goroutine only.
	buf  []readEvent // the batch being merged; buf[pos:] not merged yet
	pos  int
	done bool // buf is the last batch

	// The replies' side, guarded by rd.mu.
	from     uint64 // where the request in flight started
	next     uint64 // first sequence not read yet
	more     bool   // the store may hold more matching events up to to
	pending  uint64 // matching events after the last batch, as its end said
	probe    bool   // the next request is the first of a catch-up that may use a consumer
	inflight bool
	filling  []readEvent // the batch being received
	ready    []readEvent // a received batch the merge has not taken
	hasReady bool
	readyEnd bool // ready is the last batch
	err      error
	spare    []readEvent   // a merged batch's buffer, for the next request
	wake     chan struct{} // a batch is ready (or failed)
}

func (c *subjectCursor) head() *readEvent {
	if c.pos == len(c.buf) {
		return nil
	}
	return &c.buf[c.pos]
}

func (c *subjectCursor) pop() readEvent {
	ev := c.buf[c.pos]
	c.pos++
	return ev
}

// fill makes sure the cursor has an event to merge unless it is done,
// waiting for the next batch if it must.
func (c *subjectCursor) fill(ctx context.Context) error {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for c.pos == len(c.buf) && !c.done {
		if timer == nil {
			timer = time.NewTimer(c.rd.r.cfg.RequestTimeout)
		}
		if err := c.take(ctx, timer); err != nil {
			return err
		}
	}
	return nil
}

// take replaces the merged batch with the next one (which may be empty:
// every event in it undecodable, or past to).
func (c *subjectCursor) take(ctx context.Context, timer *time.Timer) error {
	rd := c.rd
	rd.mu.Lock()
	if c.buf != nil {
		clear(c.buf) // let the events' data go
		c.spare, c.buf, c.pos = c.buf[:0], nil, 0
	}
	for {
		if err := c.err; err != nil {
			rd.mu.Unlock()
			return err
		}
		if c.hasReady {
			c.buf, c.pos, c.done = c.ready, 0, c.readyEnd
			c.ready, c.hasReady = nil, false
			var err error
			if !c.done && c.prefetch {
				err = c.requestLocked() // the store reads on while the session writes
			}
			rd.mu.Unlock()
			return err
		}
		if !c.inflight {
			if err := c.requestLocked(); err != nil {
				rd.mu.Unlock()
				return err
			}
		}
		rd.mu.Unlock()
		select {
		case <-c.wake:
		case <-ctx.Done():
			return fmt.Errorf("direct get reply: %w", ctx.Err())
		case <-timer.C:
			return fmt.Errorf("direct get reply: %w", nats.ErrTimeout)
		}
		rd.mu.Lock()
	}
}

// resumeAt returns the first sequence the cursor has not read.
func (c *subjectCursor) resumeAt() uint64 {
	c.rd.mu.Lock()
	defer c.rd.mu.Unlock()
	return c.next
}

// cut drops the events from start on and reads no further: another cursor
// reads them.
func (c *subjectCursor) cut(start uint64) {
	i := c.pos
	for i < len(c.buf) && c.buf[i].seq < start {
		i++
	}
	clear(c.buf[i:])
	c.buf, c.done = c.buf[:i], true
}

// readAhead turns prefetch on and asks for the next batch now.
func (c *subjectCursor) readAhead() error {
	c.rd.mu.Lock()
	defer c.rd.mu.Unlock()
	c.prefetch = true
	if c.done || c.inflight || c.hasReady {
		return nil
	}
	return c.requestLocked()
}

// probeBatch bounds the first batch of a catch-up that may go on through a
// consumer.
const probeBatch = 256

// requestLocked asks for the next batch, of at most ReplayBatch events.
func (c *subjectCursor) requestLocked() error {
	size := c.rd.r.cfg.ReplayBatch
	if c.probe {
		// The first batch of a catch-up tells how much is pending: a long
		// read goes on through a consumer, and reads little more here.
		size, c.probe = min(size, probeBatch), false
	}
	if span := c.to - c.next + 1; span < uint64(size) {
		size = int(span)
	}
	body, _ := json.Marshal(directGetRequest{Seq: c.next, NextBySubj: c.subject, Batch: size, MaxBytes: c.rd.r.cfg.ReplayBytes})
	c.from, c.more, c.inflight = c.next, true, true
	c.filling, c.spare = c.spare, nil
	if err := c.rd.r.cfg.Conn.PublishRequest(c.rd.directGetSubject(), c.reply, body); err != nil {
		c.inflight = false
		return fmt.Errorf("direct get: %w", natsErr(err))
	}
	return nil
}

// addLocked appends the event a reply carries to the batch being received.
func (c *subjectCursor) addLocked(m *nats.Msg) {
	seq, err := strconv.ParseUint(m.Header.Get("Nats-Sequence"), 10, 64)
	if err != nil {
		// A header block nats.go cannot decode (only a raw publisher can
		// write one): dropped, as live dispatch dropped it (and counted
		// it); the 204 at the batch's end moves the cursor past it.
		c.rd.r.log.Debug("replay: skipped an event whose header block cannot be decoded", "subject", c.subject, "after", c.next-1)
		return
	}
	if seq >= c.next {
		c.next = seq + 1
	}
	if seq > c.to {
		c.more = false // past the handover point: the queue has the rest
		return
	}
	c.filling = append(c.filling, c.rd.r.readEvent(seq, m))
}

// readEvent reads the event m of the store carries.
func (r *Relay) readEvent(seq uint64, m *nats.Msg) readEvent {
	ev := readEvent{storedEvent: storedEvent{seq: seq, event: m.Header.Get(HeaderEvent), data: m.Data},
		connUser: m.Header.Get(HeaderConnectionUser)}
	ev.connID = exclusionID(m.Header.Get(HeaderConnectionID), ev.connUser, r.cfg.ExclusionWithoutUser)
	ev.bad = ev.event != "" && !sse.SafeEventName(ev.event)
	return ev
}

// finishLocked ends the batch in flight and hands it to the merge.
func (c *subjectCursor) finishLocked(more bool, err error) {
	c.inflight = false
	if err != nil {
		c.err = err
	} else {
		c.more = more
		c.ready, c.hasReady, c.readyEnd = c.filling, true, !more
		if c.ready == nil {
			c.ready = []readEvent{} // an empty batch still counts as taken
		}
	}
	c.filling = nil
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// lastSeq asks the stream for its last sequence.
func (r *Relay) lastSeq(ctx context.Context) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.RequestTimeout)
	defer cancel()
	s, err := r.js.Stream(ctx, r.cfg.Stream)
	if err != nil {
		return 0, fmt.Errorf("stream info: %w", natsErr(err))
	}
	return s.CachedInfo().State.LastSeq, nil
}
