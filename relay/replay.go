package relay

import "context"

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
	err = r.replayStore(ctx, rd, f, from, pos-1, to, limit, &n, emit)
	st.store = n - st.ring
	return st, err
}

// replayStore reads (pos, to] from the store, after *n events of the replay
// from first were emitted; it adds those it emits to *n.
func (r *Relay) replayStore(ctx context.Context, rd *storeReader, f replayFilter, first, from, to uint64, limit int, n *int, emit func(storedEvent) error) error {
	cursors := make([]*subjectCursor, len(f.subjects))
	for i, s := range f.subjects {
		// A page (limit) would mostly waste a batch read ahead.
		cursors[i] = rd.cursor(s, from, to, limit == 0)
	}
	var last uint64 // overlapping filters (topic a and a.b) read some events twice
	for {
		var best *subjectCursor
		for _, c := range cursors {
			if err := c.fill(ctx); err != nil {
				return err
			}
			if c.head() != nil && (best == nil || c.head().seq < best.head().seq) {
				best = c
			}
		}
		if best == nil {
			break
		}
		ev := best.pop()
		if ev.seq <= last {
			continue
		}
		last = ev.seq
		if ev.excluded(f.excludeConn, f.user) {
			continue
		}
		if err := emit(ev.storedEvent); err != nil {
			return err
		}
		if *n++; limit > 0 && *n >= limit {
			return nil
		}
	}
	// A trim that overtook the read would have hidden events from it.
	if ok, err := rd.exists(ctx, first+1); err != nil {
		return err
	} else if !ok {
		return errHistoryGone
	}
	return nil
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
