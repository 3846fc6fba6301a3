package relay

import (
	"context"
	"errors"
)

// storedEvent is one event read back from the stream.
type storedEvent struct {
	seq   uint64
	event string
	data  []byte
}

// replay calls emit for every event of f in (from, to], in sequence order,
// reading the store in batches (batch Direct Get with next_by_subj, one
// cursor per subject, merged by sequence). It reads at most one batch per
// subject ahead (two batches per subject in memory at most: see
// storeReader), so memory is bounded by ReplayBatch whatever the range.
// limit > 0 stops after that many events. It returns errHistoryGone when
// from+1 has been trimmed, before or during the read. The stats say how
// many events came from the ring and how many from the store.
func (r *Relay) replay(ctx context.Context, f replayFilter, from, to uint64, limit int, emit func(storedEvent) error) (replayStats, error) {
	var st replayStats
	if from >= to {
		return st, nil
	}
	rd, err := r.newStoreReader()
	if err != nil {
		return st, err
	}
	defer rd.close()
	// Retention trims from the front only, so from+1 existing means nothing
	// after it is missing. Checked even when the ring holds from+1: what
	// retention or a purge removed is gone for every instance alike.
	if ok, err := rd.exists(ctx, from+1); err != nil {
		return st, err
	} else if !ok {
		return st, errHistoryGone
	}
	n := 0
	// Recent events come from memory; the store serves what the ring no
	// longer holds (or what it lost to eviction while we read).
	pos, err := r.hub.replayRing(f, from+1, to, limit, &n, emit)
	st.ring = n
	if err != nil || pos > to {
		return st, err
	}
	r.metrics.storeReplays.Add(1)
	st.readStore = true
	err = r.replayStore(ctx, rd, f, from, pos-1, to, limit, &n, emit, &st)
	st.store = n - st.ring
	return st, err
}

// storeCursor yields events of the store in sequence order.
type storeCursor interface {
	// fill makes sure head has an event unless the cursor is done.
	fill(ctx context.Context) error
	head() *readEvent
	pop() readEvent
}

// replayStore reads (pos, to] from the store, after *n events of the replay
// from first were emitted; it adds those it emits to *n. A catch-up (no
// limit) reads the first batch of each subject with Direct Get; if the store
// holds more than ReplayConsumerMin events after them, it reads the rest
// through a short-lived consumer (see consumerCursor), and falls back to
// Direct Get if that fails.
func (r *Relay) replayStore(ctx context.Context, rd *storeReader, f replayFilter, first, from, to uint64, limit int, n *int, emit func(storedEvent) error, st *replayStats) error {
	subjects := make([]*subjectCursor, len(f.subjects))
	cursors := make([]storeCursor, 0, len(f.subjects)+1)
	for i, s := range f.subjects {
		// A page (limit) would mostly waste a batch read ahead; a catch-up
		// reads ahead once it knows whether the consumer takes over.
		subjects[i] = rd.cursor(s, from, to, false)
		// A catch-up long enough for a consumer starts with a small batch.
		subjects[i].probe = limit == 0 && r.cfg.ReplayConsumerMin >= 0 && to-from > uint64(r.cfg.ReplayConsumerMin)
		cursors = append(cursors, subjects[i])
	}
	var ccs []*consumerCursor
	if limit == 0 {
		var err error
		if ccs, err = r.storeFirstBatches(ctx, subjects); err != nil {
			return err
		}
		defer closeAll(ccs)
		for _, cc := range ccs {
			st.consumer = true
			cursors = append(cursors, cc)
		}
	}
	last, err := mergeStore(ctx, f, cursors, from, limit, n, emit)
	if len(ccs) > 0 && errors.Is(err, errReplayConsumer) && ctx.Err() == nil {
		// Go on with Direct Get from the last event merged.
		r.log.Warn("replay: reading the store through a consumer failed, going on with direct get", "from", last, "to", to, "err", err)
		r.metrics.consumerFallbacks.Add(1)
		cursors = cursors[:0]
		for _, s := range f.subjects {
			cursors = append(cursors, rd.cursor(s, last, to, true))
		}
		_, err = mergeStore(ctx, f, cursors, last, limit, n, emit)
	}
	if err != nil || (limit > 0 && *n >= limit) {
		return err
	}
	return rd.checkFirst(ctx, first)
}

// mergeStore emits the events of cursors after sequence last in sequence
// order, once each, and returns the last sequence it merged.
func mergeStore(ctx context.Context, f replayFilter, cursors []storeCursor, last uint64, limit int, n *int, emit func(storedEvent) error) (uint64, error) {
	for {
		var best storeCursor
		for _, c := range cursors {
			if err := c.fill(ctx); err != nil {
				return last, err
			}
			if c.head() != nil && (best == nil || c.head().seq < best.head().seq) {
				best = c
			}
		}
		if best == nil {
			return last, nil
		}
		ev := best.pop()
		if ev.seq <= last {
			continue // overlapping filters (topic a and a.b) read some events twice
		}
		last = ev.seq
		if ev.excluded(f.excludeConn, f.user) {
			continue
		}
		if err := emit(ev.storedEvent); err != nil {
			return last, err
		}
		if *n++; limit > 0 && *n >= limit {
			return last, nil
		}
	}
}

// checkFirst: a trim that overtook the read would have hidden events from it.
func (rd *storeReader) checkFirst(ctx context.Context, first uint64) error {
	if ok, err := rd.exists(ctx, first+1); err != nil {
		return err
	} else if !ok {
		return errHistoryGone
	}
	return nil
}

// storeFirstBatches reads the first Direct Get batch of every subject
// cursor. A subject whose batch end says more than ReplayConsumerMin events
// are pending reads the rest through a short-lived consumer (from the first
// sequence its cursor has not read, the cursor cut there); the others (and
// any whose consumer cannot be created) read on with Direct Get.
func (r *Relay) storeFirstBatches(ctx context.Context, cursors []*subjectCursor) ([]*consumerCursor, error) {
	for _, c := range cursors {
		if err := c.fill(ctx); err != nil {
			return nil, err
		}
	}
	var ccs []*consumerCursor
	for _, c := range cursors {
		if min := r.cfg.ReplayConsumerMin; min >= 0 && !c.done && c.pending > uint64(min) && len(ccs) < maxReplayConsumers {
			start := c.resumeAt()
			cc, err := c.rd.newConsumerCursor(ctx, c.subject, start, c.to)
			if err == nil {
				c.cut(start) // the consumer delivers the rest
				ccs = append(ccs, cc)
				continue
			}
			if errors.Is(err, errReplayConsumersBusy) {
				r.metrics.consumersBusy.Add(1)
			} else if ctx.Err() != nil {
				closeAll(ccs)
				return nil, err
			} else {
				r.log.Warn("replay: cannot read the store through a consumer, going on with direct get", "subject", c.subject, "err", err)
				r.metrics.consumerFallbacks.Add(1)
			}
		}
		if err := c.readAhead(); err != nil {
			closeAll(ccs)
			return nil, err
		}
	}
	return ccs, nil
}

// maxReplayConsumers bounds the consumers of one replay (one per subject of
// its filter that has many events to read).
const maxReplayConsumers = 4

func closeAll(ccs []*consumerCursor) {
	for _, cc := range ccs {
		cc.close()
	}
}

type readEvent struct {
	storedEvent
	connID   string
	connUser string
	bad      bool // cannot be written; dropped as in dispatch
}

func (e *readEvent) excluded(conn, user string) bool {
	return e.bad || excludes(e.connID, e.connUser, conn, user)
}

// maxScan bounds the entries one lock hold of the chunked scan visits, so
// that a resume over a long sparse range does not hold up the dispatcher.
const maxScan = 4096

// replayRing emits the events of f from the ring, from sequence pos up to
// to, and returns the first sequence it could not serve because the ring no
// longer holds it (to+1 when it served everything). The usual resume walks
// its own feeds' links; a large one copies a batch at a time under the
// registry lock and emits outside it.
func (h *hub) replayRing(f replayFilter, pos, to uint64, limit int, n *int, emit func(storedEvent) error) (uint64, error) {
	h.mu.Lock()
	evs, ok := h.ring.linked(&f, pos, to)
	h.mu.Unlock()
	if ok {
		for _, ev := range evs {
			if err := emit(ev); err != nil {
				return pos, err
			}
			if *n++; limit > 0 && *n >= limit {
				break
			}
		}
		return to + 1, nil
	}
	batch := make([]storedEvent, 0, h.scanBatch)
	for pos <= to {
		batch = batch[:0]
		h.mu.Lock()
		if !h.ring.covers(pos) {
			h.mu.Unlock()
			return pos, nil
		}
		end := min(to, h.ring.last(), pos+maxScan-1)
		for ; pos <= end && len(batch) < cap(batch); pos++ {
			e := h.ring.at(pos)
			if e.bad || !f.matches(e.key, e.topic) || excludes(e.connID, e.connUser, f.excludeConn, f.user) {
				continue
			}
			batch = append(batch, storedEvent{seq: e.seq, event: e.event, data: e.data})
		}
		h.mu.Unlock()
		for _, ev := range batch {
			if err := emit(ev); err != nil {
				return pos, err
			}
			if *n++; limit > 0 && *n >= limit {
				return to + 1, nil
			}
		}
	}
	return pos, nil
}
