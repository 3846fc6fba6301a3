package relay

// ring holds the most recent dispatched events, so that resumes from a
// recent position (the common case: a reconnect after a few seconds, or a
// whole pod's clients arriving at once) are served from memory instead of
// the store. It holds consecutive sequences only: a jump in the stream
// empties it. Guarded by Relay.mu.
type ring struct {
	buf      []ringEntry // circular, len = capacity
	head     int         // index of the oldest entry
	n        int         // entries held
	bytes    int         // payload bytes held
	maxBytes int
}

type ringEntry struct {
	seq      uint64
	key      string // "<app>.<feed>"
	topic    string
	event    string
	connID   string
	connUser string
	data     []byte
	bad      bool // dropped by dispatch: not delivered on replay either
}

func newRing(events, maxBytes int) *ring {
	if events <= 0 {
		return nil
	}
	return &ring{buf: make([]ringEntry, events), maxBytes: maxBytes}
}

func (g *ring) size(e *ringEntry) int {
	return len(e.data) + len(e.key) + len(e.topic) + len(e.event) + len(e.connID) + len(e.connUser) + 64
}

// push appends e, whose seq must follow the newest entry's (or the ring be
// empty), evicting the oldest entries beyond the limits.
func (g *ring) push(e ringEntry) {
	if g.n > 0 && e.seq != g.last()+1 {
		g.reset()
	}
	for g.n > 0 && (g.n == len(g.buf) || g.bytes+g.size(&e) > g.maxBytes) {
		g.bytes -= g.size(&g.buf[g.head])
		g.buf[g.head] = ringEntry{}
		g.head = (g.head + 1) % len(g.buf)
		g.n--
	}
	g.buf[(g.head+g.n)%len(g.buf)] = e
	g.n++
	g.bytes += g.size(&e)
}

func (g *ring) reset() {
	clear(g.buf)
	g.head, g.n, g.bytes = 0, 0, 0
}

func (g *ring) first() uint64 {
	if g.n == 0 {
		return 0
	}
	return g.buf[g.head].seq
}

func (g *ring) last() uint64 {
	if g.n == 0 {
		return 0
	}
	return g.buf[(g.head+g.n-1)%len(g.buf)].seq
}

// covers reports whether the ring holds seq.
func (g *ring) covers(seq uint64) bool {
	return g != nil && g.n > 0 && seq >= g.first() && seq <= g.last()
}

// at returns the entry of seq, which must be covered.
func (g *ring) at(seq uint64) *ringEntry {
	return &g.buf[(g.head+int(seq-g.first()))%len(g.buf)]
}

// replayRing emits the events of f from the ring, from sequence pos up to
// to, copying a batch at a time under the registry lock and emitting outside
// it. It returns the first sequence it could not serve because the ring
// no longer holds it (to+1 when it served everything).
func (r *Relay) replayRing(f replayFilter, pos, to uint64, limit int, n *int, emit func(storedEvent) error) (uint64, error) {
	batch := make([]storedEvent, 0, min(r.cfg.ReplayBatch, 256))
	for pos <= to {
		batch = batch[:0]
		r.mu.Lock()
		if !r.ring.covers(pos) {
			r.mu.Unlock()
			return pos, nil
		}
		end := min(to, r.ring.last())
		for ; pos <= end && len(batch) < cap(batch); pos++ {
			e := r.ring.at(pos)
			if e.bad || !f.matches(e.key, e.topic) || excludes(e.connID, e.connUser, f.excludeConn, f.user) {
				continue
			}
			batch = append(batch, storedEvent{seq: e.seq, event: e.event, data: e.data})
		}
		r.mu.Unlock()
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
