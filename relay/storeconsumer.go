package relay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// errReplayConsumer marks a failure of the short-lived consumer of a long
// store read: the read goes on with Direct Get from where it stopped.
var errReplayConsumer = errors.New("replay consumer")

// errReplayConsumersBusy: the relay holds Config.ReplayConsumers consumers
// already; the read goes on with Direct Get, as planned, not as a failure.
var errReplayConsumersBusy = errors.New("replay consumers all in use")

// replayConsumerPrefix starts the name of every consumer a store read
// creates, so that an operator can tell them from the relay's own.
const replayConsumerPrefix = "sserelay_replay_"

// consumerCursor reads the events of one subject filter from sequence start
// up to to through a short-lived pull consumer (AckNone, R1, memory
// storage), in place of a subjectCursor, for a long read. The server
// delivers each event with its stored headers only: no six Nats-* headers
// to format and then decode per event as with Direct Get, and no pending
// count per batch; it takes about half the CPU per event
// (BenchmarkResume100k/store against store-direct). One consumer per
// subject, not one with several filter subjects: nats-server's multi-filter
// read (LoadNextMsgMulti) intersects the block's whole subject tree for
// every message, three to six times slower than Direct Get on a stream with
// many users. Like subjectCursor it holds at most two batches: the one being
// merged and the pull request in flight (ReplayBatch events, ReplayBytes).
type consumerCursor struct {
	r       *Relay
	rd      *storeReader
	subject string
	name    string
	next    string // the pull request subject
	sub     *nats.Subscription
	to      uint64
	batch   int

	// The merge's side, used by the session's goroutine only.
	buf      []readEvent
	pos      int
	done     bool
	complete bool           // done, and the consumer got to the handover point
	lastSeq  uint64         // the last sequence the consumer delivered (start-1 before)
	tail     *subjectCursor // reads what the consumer did not get to

	mu       sync.Mutex // guards the fields below
	closed   bool
	last     uint64 // the last sequence delivered
	reached  bool   // an event at or past to came
	inflight bool
	left     int // events the request in flight may still deliver
	bytes    int // ... and bytes, as the server counts them (nats.Msg.Size)
	final    bool
	filling  []readEvent
	ready    []readEvent
	hasReady bool
	readyEnd bool
	err      error
	spare    []readEvent
	wake     chan struct{}
}

type pullRequest struct {
	Expires  time.Duration `json:"expires,omitempty"`
	Batch    int           `json:"batch,omitempty"`
	MaxBytes int           `json:"max_bytes,omitempty"`
}

// newConsumerCursor creates the consumer of subject, starting at sequence
// start. Its errors wrap errReplayConsumer.
func (rd *storeReader) newConsumerCursor(ctx context.Context, subject string, start, to uint64) (*consumerCursor, error) {
	r := rd.r
	select {
	case r.replayConsumers <- struct{}{}: // nil (none allowed) blocks: default
	default:
		return nil, errReplayConsumersBusy
	}
	cc := &consumerCursor{r: r, rd: rd, subject: subject, to: to, batch: r.cfg.ReplayBatch, wake: make(chan struct{}, 1),
		last: start - 1, lastSeq: start - 1}
	cc.name = replayConsumerPrefix + strings.TrimPrefix(nats.NewInbox(), nats.InboxPrefix)
	cc.next = r.apiPfx + "CONSUMER.MSG.NEXT." + r.cfg.Stream + "." + cc.name
	inbox := r.cfg.Conn.NewInbox()
	sub, err := r.cfg.Conn.Subscribe(inbox, cc.onMsg)
	if err != nil {
		<-r.replayConsumers
		return nil, fmt.Errorf("%w: subscribe: %w", errReplayConsumer, err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil { // bounded by the pull requests
		_ = sub.Unsubscribe()
		<-r.replayConsumers
		return nil, fmt.Errorf("%w: subscribe: %w", errReplayConsumer, err)
	}
	cc.sub = sub
	cfg := jetstream.ConsumerConfig{
		Name:          cc.name,
		Description:   "SSE Relay: one catch-up's read of the store",
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   start,
		AckPolicy:     jetstream.AckNonePolicy,
		Replicas:      1,
		MemoryStorage: true,
		MaxWaiting:    1,
		// The relay deletes it when the read ends; this is for a relay
		// that died meanwhile.
		InactiveThreshold: max(time.Minute, 4*r.cfg.RequestTimeout),
		FilterSubject:     subject,
	}
	cctx, cancel := context.WithTimeout(ctx, r.cfg.RequestTimeout)
	c, err := r.js.CreateConsumer(cctx, r.cfg.Stream, cfg)
	cancel()
	if err != nil {
		cc.close() // in case it was created after all (a timeout)
		return nil, fmt.Errorf("%w: create: %w", errReplayConsumer, natsErr(err))
	}
	if c.CachedInfo().NumPending == 0 {
		cc.done = true
	}
	return cc, nil
}

// close deletes the consumer. It does not wait for the answer: the
// catch-up goes live meanwhile, and the consumer's inactive threshold
// removes it if the request is lost.
func (cc *consumerCursor) close() {
	cc.mu.Lock()
	was := cc.closed
	cc.closed = true
	cc.mu.Unlock()
	if was {
		return
	}
	<-cc.r.replayConsumers // its token, taken by newConsumerCursor
	_ = cc.sub.Unsubscribe()
	if err := cc.r.cfg.Conn.Publish(cc.r.apiPfx+"CONSUMER.DELETE."+cc.r.cfg.Stream+"."+cc.name, nil); err != nil {
		cc.r.log.Debug("replay: delete consumer", "consumer", cc.name, "err", err)
	}
}

func (cc *consumerCursor) head() *readEvent {
	if cc.tail != nil {
		return cc.tail.head()
	}
	if cc.pos == len(cc.buf) {
		return nil
	}
	return &cc.buf[cc.pos]
}

func (cc *consumerCursor) pop() readEvent {
	if cc.tail != nil {
		return cc.tail.pop()
	}
	ev := cc.buf[cc.pos]
	cc.pos++
	return ev
}

// fill makes sure head has an event unless the cursor is done. When the
// consumer stops short of the handover point (it said nothing more was
// pending), Direct Get reads the rest of the range: usually one request
// that finds nothing, and what makes the read exact even if the consumer's
// replica lags the stream leader (in a cluster a replay consumer is placed
// on any replica of the stream).
func (cc *consumerCursor) fill(ctx context.Context) error {
	if cc.tail != nil {
		return cc.tail.fill(ctx)
	}
	if err := cc.fillConsumer(ctx); err != nil {
		return err
	}
	if cc.pos == len(cc.buf) && cc.done && !cc.complete && cc.lastSeq < cc.to {
		cc.tail = cc.rd.cursor(cc.subject, cc.lastSeq, cc.to, true)
		return cc.tail.fill(ctx)
	}
	return nil
}

// fillConsumer waits for the consumer's next batch if the merge has taken
// the current one.
func (cc *consumerCursor) fillConsumer(ctx context.Context) error {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for cc.pos == len(cc.buf) && !cc.done {
		if timer == nil {
			timer = time.NewTimer(cc.r.cfg.RequestTimeout + time.Second)
		}
		if err := cc.take(ctx, timer); err != nil {
			return err
		}
	}
	return nil
}

// take replaces the merged batch with the next one and asks for the one
// after it, so that the server reads while the session writes.
func (cc *consumerCursor) take(ctx context.Context, timer *time.Timer) error {
	cc.mu.Lock()
	if cc.buf != nil {
		clear(cc.buf)
		cc.spare, cc.buf, cc.pos = cc.buf[:0], nil, 0
	}
	for {
		if err := cc.err; err != nil {
			cc.mu.Unlock()
			return err
		}
		if cc.hasReady {
			cc.buf, cc.pos, cc.done = cc.ready, 0, cc.readyEnd
			cc.ready, cc.hasReady = nil, false
			cc.lastSeq, cc.complete = cc.last, cc.reached
			var err error
			if !cc.done {
				err = cc.requestLocked()
			}
			cc.mu.Unlock()
			return err
		}
		if !cc.inflight {
			if err := cc.requestLocked(); err != nil {
				cc.mu.Unlock()
				return err
			}
		}
		cc.mu.Unlock()
		select {
		case <-cc.wake:
		case <-ctx.Done():
			return fmt.Errorf("consumer reply: %w", ctx.Err())
		case <-timer.C:
			return fmt.Errorf("%w: %w", errReplayConsumer, nats.ErrTimeout)
		}
		cc.mu.Lock()
	}
}

// requestLocked pulls the next batch: at most ReplayBatch events (fewer if
// the range holds fewer), ReplayBytes, within RequestTimeout.
func (cc *consumerCursor) requestLocked() error {
	n := cc.batch
	if span := cc.to - cc.last; span < uint64(n) {
		n = max(1, int(span))
	}
	body, _ := json.Marshal(pullRequest{Batch: n, MaxBytes: cc.r.cfg.ReplayBytes, Expires: cc.r.cfg.RequestTimeout})
	cc.inflight, cc.left, cc.bytes = true, n, cc.r.cfg.ReplayBytes
	cc.filling, cc.spare = cc.spare, nil
	if err := cc.r.cfg.Conn.PublishRequest(cc.next, cc.sub.Subject, body); err != nil {
		cc.inflight = false
		return fmt.Errorf("%w: pull: %w", errReplayConsumer, natsErr(err))
	}
	return nil
}

// onMsg takes one message of the pull request in flight: an event, or a
// status that ends the request. It runs in the subscription's goroutine.
func (cc *consumerCursor) onMsg(m *nats.Msg) {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	if cc.closed || !cc.inflight || cc.final {
		return
	}
	if m.Reply == "" { // a status: events carry their ack subject
		status, desc := m.Header.Get("Status"), m.Header.Get("Description")
		switch {
		case status == "100": // a heartbeat
		case status == "409" && strings.Contains(desc, "Batch Completed"):
			// After the last event of a request that had bytes left:
			// counted already.
		case status == "408" || (status == "409" && strings.Contains(desc, "MaxBytes")):
			// The request ended before its count.
			if len(cc.filling) == 0 {
				// Nothing came in a whole request: give up on the consumer.
				cc.finishLocked(fmt.Errorf("%w: status %s %s with no event", errReplayConsumer, status, desc))
				return
			}
			cc.finishLocked(nil)
		default:
			cc.finishLocked(fmt.Errorf("%w: status %s %s", errReplayConsumer, status, desc))
		}
		return
	}
	seq, pending, ok := parseAckReply(m.Reply)
	if !ok {
		cc.finishLocked(fmt.Errorf("%w: unexpected reply subject %q", errReplayConsumer, m.Reply))
		return
	}
	cc.left--
	size := m.Size()
	cc.bytes -= size
	if seq <= cc.last {
		// Not in order: the consumer is not what it should be.
		cc.finishLocked(fmt.Errorf("%w: sequence %d after %d", errReplayConsumer, seq, cc.last))
		return
	}
	cc.last = seq
	cc.reached = seq >= cc.to
	if seq > cc.to {
		cc.final = true // past the handover point: the queue has the rest
	} else if undecodableRawHeader(m) {
		// A header block nats.go cannot decode (only a raw publisher can
		// write one): dropped, as live dispatch dropped it.
		cc.r.log.Debug("replay: skipped an event whose header block cannot be decoded", "seq", seq)
		cc.final = seq == cc.to || pending == 0
	} else {
		cc.filling = append(cc.filling, cc.r.readEvent(seq, m))
		// Nothing pending after this one: the consumer is done, and fill
		// checks the rest of the range with Direct Get.
		cc.final = seq == cc.to || pending == 0
	}
	if cc.final || cc.left <= 0 || cc.bytes <= 0 {
		cc.finishLocked(nil)
	}
}

func (cc *consumerCursor) finishLocked(err error) {
	cc.inflight = false
	if err != nil {
		cc.err = err
	} else {
		cc.ready, cc.hasReady, cc.readyEnd = cc.filling, true, cc.final
		if cc.ready == nil {
			cc.ready = []readEvent{}
		}
	}
	cc.filling = nil
	select {
	case cc.wake <- struct{}{}:
	default:
	}
}

// parseAckReply reads the stream sequence and the pending count from the
// reply subject of a consumer's message:
// $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<dseq>.<ts>.<pending>, or
// with <domain>.<account hash> after ACK and maybe more tokens after.
func parseAckReply(s string) (seq, pending uint64, ok bool) {
	var toks [12]string
	n := 0
	for n < len(toks) {
		i := strings.IndexByte(s, '.')
		if i < 0 {
			toks[n] = s
			n++
			break
		}
		toks[n], s = s[:i], s[i+1:]
		n++
	}
	var i int
	switch {
	case n == 9:
		i = 5
	case n >= 11:
		i = 7
	default:
		return 0, 0, false
	}
	if toks[0] != "$JS" || toks[1] != "ACK" {
		return 0, 0, false
	}
	seq, err1 := strconv.ParseUint(toks[i], 10, 64)
	pending, err2 := strconv.ParseUint(toks[i+3], 10, 64)
	return seq, pending, err1 == nil && err2 == nil
}
