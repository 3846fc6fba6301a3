package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// The consumer's timings. A missed heartbeat is noticed after two of them,
// so a consumer whose server died is replaced within about
// 2*consumerHeartbeat + consumerCreateTimeout.
const (
	consumerHeartbeat     = time.Second
	consumerCreateTimeout = 2 * time.Second
	// consumerInactive lets the server delete a consumer that we gave up
	// on and could not delete (its server was down at the time).
	consumerInactive = 30 * time.Second
	// consumerBackoffMax caps the wait between failed creations: with no
	// meta leader, or NATS unreachable, the relay keeps trying this often.
	consumerBackoffMax = time.Second
)

// Reasons a consumer is replaced: the log field and the metric label.
const (
	recreateNoHeartbeat = "no-heartbeat"
	recreateDeleted     = "deleted"
	recreateGap         = "sequence-gap"
	recreateReconnect   = "reconnect"
	recreateNoResponder = "no-responders"
)

// A liveConsumer owns the relay's one JetStream consumer on the whole
// stream and its lifecycle. It does what nats.go's ordered consumer does
// (ephemeral, in memory, no acks, restarted after the last stream sequence
// dispatched on a gap, a missed heartbeat or a reconnect) with two
// differences that bound a stall in a cluster to a few seconds:
//
//   - every creation gets a new name and a short timeout. The meta leader
//     can place a consumer on a server that died moments ago (it still counts
//     it as alive); the ordered consumer retried that one placement, under
//     one name, until the server came back. Here the next try is a new
//     consumer, placed afresh.
//   - its state is visible: Ready fails while no consumer is delivering,
//     and each replacement is logged and counted.
//
// The handler is called serially, across generations: a message of a
// consumer that was replaced is never dispatched.
type liveConsumer struct {
	stream   jetstream.Stream
	conn     *nats.Conn
	filter   string
	log      *slog.Logger
	handle   func(jetstream.Msg, *jetstream.MsgMetadata)
	nextSeq  func() uint64 // the first stream sequence the next consumer must deliver
	replaced func(reason string)

	kick    chan string // capacity 1: replace the consumer, for this reason
	healthy atomic.Bool
	ctx     context.Context // ends with close
	cancel  context.CancelFunc
	done    chan struct{} // closed when run returns

	mu       sync.Mutex // serialises handler calls; guards the fields below
	gen      uint64     // generation of the current consumer
	lastCons uint64     // last consumer sequence of the current generation
	name     string     // of the current consumer
	prefix   string
}

func newLiveConsumer(stream jetstream.Stream, conn *nats.Conn, filter string, log *slog.Logger,
	handle func(jetstream.Msg, *jetstream.MsgMetadata), nextSeq func() uint64, replaced func(string)) *liveConsumer {
	ctx, cancel := context.WithCancel(context.Background())
	return &liveConsumer{
		stream: stream, conn: conn, filter: filter, log: log, handle: handle, nextSeq: nextSeq, replaced: replaced,
		kick: make(chan string, 1), ctx: ctx, cancel: cancel, done: make(chan struct{}),
		// A name of its own per relay: two relays sharing a prefix would
		// otherwise share (and split) one consumer.
		prefix: "sserelay_" + nuid.Next(),
	}
}

// start creates the first consumer, retrying as the lifecycle does until
// ctx ends: a relay started while its cluster elects a meta leader, or just
// after its stream was created, waits for it instead of failing, and a
// relay that cannot consume by then does not start. Then the lifecycle runs
// in a goroutine until close.
func (c *liveConsumer) start(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(c.ctx, cancel) // close during start
	defer stop()
	cc, name, err := c.createRetrying(ctx)
	if err != nil {
		close(c.done)
		return err
	}
	c.healthy.Store(true)
	go c.run(cc, name)
	return nil
}

// run replaces the consumer whenever it is kicked, until close.
func (c *liveConsumer) run(cc jetstream.ConsumeContext, name string) {
	defer close(c.done)
	status := c.conn.StatusChanged(nats.CONNECTED)
	defer c.conn.RemoveStatusListener(status)
	for {
		var reason string
		select {
		case <-c.ctx.Done():
			c.retire(cc)
			return
		case reason = <-c.kick:
		case <-status:
			// Pull requests in flight were lost with the connection, and the
			// consumer's server may be the one that went away.
			reason = recreateReconnect
		}
		c.healthy.Store(false)
		c.retire(cc)
		old := name
		c.log.Warn("replacing the stream consumer", "reason", reason, "consumer", old, "next_seq", c.nextSeq())
		if c.replaced != nil {
			c.replaced(reason)
		}
		var err error
		if cc, name, err = c.createRetrying(c.ctx); err != nil {
			return // closed while retrying
		}
		c.healthy.Store(true)
		c.log.Info("stream consumer replaced", "reason", reason, "consumer", name)
		if reason != recreateNoHeartbeat {
			// Its server is up: delete it now rather than when it expires.
			ctx, cancel := context.WithTimeout(context.Background(), consumerCreateTimeout)
			_ = c.stream.DeleteConsumer(ctx, old)
			cancel()
		}
	}
}

// createRetrying creates consumers until one starts or ctx ends; then it
// returns the last creation's error.
func (c *liveConsumer) createRetrying(ctx context.Context) (jetstream.ConsumeContext, string, error) {
	var b backoff
	for attempt := 1; ; attempt++ {
		cc, name, err := c.create(ctx)
		if err == nil {
			return cc, name, nil
		}
		if ctx.Err() != nil {
			return nil, "", fmt.Errorf("%w (after %d attempts: %w)", err, attempt, context.Cause(ctx))
		}
		level := slog.LevelDebug
		if attempt%10 == 1 {
			level = slog.LevelWarn
		}
		if errors.Is(err, jetstream.ErrMaximumConsumersLimit) && attempt%10 == 1 {
			// Nothing is delivered until a consumer of the stream goes away.
			level = slog.LevelError
			err = fmt.Errorf("%w (every relay on the stream holds one consumer and up to --replay-consumers more: raise the stream's max_consumers or lower --replay-consumers)", err)
		}
		c.log.Log(context.Background(), level, "creating the stream consumer", "attempt", attempt, "err", err)
		if !b.sleep(ctx) {
			return nil, "", fmt.Errorf("%w (after %d attempts: %w)", err, attempt, context.Cause(ctx))
		}
	}
}

// backoff paces retries: 50 ms, doubling up to consumerBackoffMax.
type backoff struct{ wait time.Duration }

// sleep waits for the next try; false if ctx ended first.
func (b *backoff) sleep(ctx context.Context) bool {
	if b.wait == 0 {
		b.wait = 50 * time.Millisecond
	}
	t := time.NewTimer(b.wait)
	defer t.Stop()
	b.wait = min(2*b.wait, consumerBackoffMax)
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// create makes a consumer of a new generation starting at nextSeq and
// starts consuming it.
func (c *liveConsumer) create(ctx context.Context) (jetstream.ConsumeContext, string, error) {
	c.mu.Lock()
	c.gen++
	gen := c.gen
	c.lastCons = 0
	c.mu.Unlock()
	name := fmt.Sprintf("%s_%d", c.prefix, gen)
	c.mu.Lock()
	c.name = name
	c.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, consumerCreateTimeout)
	defer cancel()
	cons, err := c.stream.CreateConsumer(ctx, jetstream.ConsumerConfig{
		Name:              name,
		FilterSubject:     c.filter,
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       c.nextSeq(),
		AckPolicy:         jetstream.AckNonePolicy,
		InactiveThreshold: consumerInactive,
		Replicas:          1,
		MemoryStorage:     true,
	})
	if err != nil {
		return nil, "", fmt.Errorf("create consumer %s: %w", name, err)
	}
	cc, err := cons.Consume(func(msg jetstream.Msg) { c.deliver(gen, msg) },
		jetstream.PullMaxMessages(1024),
		jetstream.PullHeartbeat(consumerHeartbeat),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) { c.consumeError(gen, err) }))
	if err != nil {
		return nil, "", fmt.Errorf("consume %s: %w", name, err)
	}
	return cc, name, nil
}

// deliver hands one message of generation gen to the handler, in order.
func (c *liveConsumer) deliver(gen uint64, msg jetstream.Msg) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return // a replaced consumer's message: its successor delivers it again
	}
	meta, err := msg.Metadata()
	if err != nil {
		c.log.Error("stream consumer: message without metadata", "subject", msg.Subject(), "err", err)
		return
	}
	if meta.Sequence.Consumer != c.lastCons+1 {
		// A message was lost on the way (no acks): start again after the
		// last one dispatched. Nothing after it is dispatched meanwhile.
		c.gen++
		c.signal(recreateGap)
		return
	}
	c.lastCons = meta.Sequence.Consumer
	c.handle(msg, meta)
}

func (c *liveConsumer) consumeError(gen uint64, err error) {
	c.mu.Lock()
	current := gen == c.gen
	c.mu.Unlock()
	if !current {
		return
	}
	switch {
	case errors.Is(err, jetstream.ErrNoHeartbeat):
		c.signal(recreateNoHeartbeat)
	case errors.Is(err, jetstream.ErrConsumerDeleted), errors.Is(err, jetstream.ErrConsumerNotFound):
		c.signal(recreateDeleted)
	case errors.Is(err, nats.ErrNoResponders):
		c.signal(recreateNoResponder)
	case errors.Is(err, nats.ErrConnectionClosed):
	default:
		c.log.Warn("stream consumer", "err", err)
	}
}

func (c *liveConsumer) signal(reason string) {
	select {
	case c.kick <- reason:
	default: // a replacement is already due
	}
}

// retire stops a consumer and waits, briefly, for its handler to return.
func (c *liveConsumer) retire(cc jetstream.ConsumeContext) {
	c.mu.Lock()
	c.gen++ // whatever it still delivers is dropped
	c.mu.Unlock()
	cc.Stop()
	select {
	case <-cc.Closed():
	case <-time.After(time.Second):
	}
}

// delivering reports whether a consumer is in place (false while one is
// being replaced). A nil consumer (not started) is not delivering.
func (c *liveConsumer) delivering() bool { return c != nil && c.healthy.Load() }

// currentName returns the name of the current consumer ("" for nil).
func (c *liveConsumer) currentName() string {
	if c == nil {
		return ""
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.name
}

// close stops the consumer and its lifecycle goroutine. It may be called
// more than once, after a failed start, and on nil.
func (c *liveConsumer) close() {
	if c == nil {
		return
	}
	c.cancel()
	<-c.done
	c.healthy.Store(false)
}
