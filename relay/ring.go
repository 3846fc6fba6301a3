package relay

import (
	"cmp"
	"slices"

	"github.com/sserelay/sserelay/relay/subject"
)

// ring holds the most recent dispatched events, so that resumes from a
// recent position (the common case: a reconnect after a few seconds, or a
// whole pod's clients arriving at once) are served from memory instead of
// the store. It holds consecutive sequences only: a jump in the stream
// empties it. Guarded by hub.mu.
type ring struct {
	buf      []ringEntry // circular; grows (doubling) up to max entries
	max      int
	head     int // index of the oldest entry
	n        int // entries held
	bytes    int // payload bytes held
	maxBytes int
	// lastByKey is the newest entry of each feed; with ringEntry.prev it
	// links each feed's entries, so that a resume walks its own events
	// instead of everything since its position.
	lastByKey map[string]uint64
}

type ringEntry struct {
	seq      uint64
	key      string // "<app>.<feed>"
	topic    string
	event    string
	connID   string
	connUser string
	data     []byte
	bad      bool   // dropped by dispatch: not delivered on replay either
	prev     uint64 // the previous entry of the same key (0: none)
}

func newRing(events, maxBytes int) *ring {
	if events <= 0 {
		return nil
	}
	return &ring{buf: make([]ringEntry, min(events, 1024)), max: events, maxBytes: maxBytes, lastByKey: make(map[string]uint64)}
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
	if g.n == len(g.buf) && len(g.buf) < g.max {
		// Grow with use: an idle relay does not pay for a large ring.
		grown := make([]ringEntry, min(2*len(g.buf), g.max))
		k := copy(grown, g.buf[g.head:])
		copy(grown[k:], g.buf[:g.head])
		g.buf, g.head = grown, 0
	}
	for g.n > 0 && (g.n == len(g.buf) || g.bytes+g.size(&e) > g.maxBytes) {
		old := &g.buf[g.head]
		g.bytes -= g.size(old)
		if g.lastByKey[old.key] == old.seq {
			delete(g.lastByKey, old.key)
		}
		*old = ringEntry{}
		g.head = (g.head + 1) % len(g.buf)
		g.n--
	}
	e.prev = g.lastByKey[e.key]
	g.lastByKey[e.key] = e.seq
	g.buf[(g.head+g.n)%len(g.buf)] = e
	g.n++
	g.bytes += g.size(&e)
}

func (g *ring) reset() {
	clear(g.buf)
	clear(g.lastByKey)
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

// maxLinked bounds the events a resume collects through the per-feed links
// under the registry lock; a resume with more uses the chunked scan.
const maxLinked = 4096

// linked collects the events of f in [pos, to] by walking each feed's links
// back from its newest entry. ok is false when the ring does not hold pos or
// the walk would collect more than maxLinked events. Called under hub.mu.
func (g *ring) linked(f *replayFilter, pos, to uint64) (evs []storedEvent, ok bool) {
	if !g.covers(pos) {
		return nil, false
	}
	for _, k := range f.keys {
		start := len(evs)
		for seq := g.lastByKey[k]; seq >= pos && g.covers(seq); {
			e := g.at(seq)
			if seq <= to && !e.bad && subject.TopicMatches(f.topics, e.topic) && !excludes(e.connID, e.connUser, f.excludeConn, f.user) {
				if len(evs) == maxLinked {
					return nil, false
				}
				evs = append(evs, storedEvent{seq: e.seq, event: e.event, data: e.data})
			}
			seq = e.prev
		}
		slices.Reverse(evs[start:])
	}
	if len(f.keys) > 1 {
		slices.SortFunc(evs, func(a, b storedEvent) int { return cmp.Compare(a.seq, b.seq) })
	}
	return evs, true
}
