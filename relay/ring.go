package relay

import (
	"cmp"
	"slices"
	"unsafe"

	"github.com/sserelay/sserelay/relay/subject"
)

// ring holds the most recent dispatched events, so that resumes from a
// recent position (the common case: a reconnect after a few seconds, or a
// whole pod's clients arriving at once) are served from memory instead of
// the store. It holds consecutive sequences only: a jump in the stream
// empties it. Guarded by hub.mu.
//
// The garbage collector does not scan it. Kept as the NATS client hands
// them over, a full ring's strings and payloads are about a million
// pointers that every GC cycle follows (18 ms of mark work per cycle at the
// default size, BenchmarkRingGC; at 20,000 events/s a cycle every few
// seconds, each one a latency spike). So the entries (ringSlot) hold no
// pointers: their bytes are copied into blocks of ringBlock bytes, and an
// entry names its block and offset. A block is dropped once the ring has
// evicted its entries, and freed once no replay holds a slice of it; its
// bytes are never written again.
type ring struct {
	buf      []ringSlot // circular; grows (doubling) up to max entries
	max      int
	head     int // index of the oldest entry
	n        int // entries held
	bytes    int // payload bytes held
	maxBytes int
	// lastByKey is the newest entry of each feed; with ringEntry.prev it
	// links each feed's entries, so that a resume walks its own events
	// instead of everything since its position.
	lastByKey map[string]uint64
	// blocks hold the bytes of the entries, oldest first; blocks[0] is
	// block number base. New bytes go to the free space of the last one.
	blocks [][]byte
	base   uint32
}

// ringBlock is the size of the blocks that hold the ring's bytes (larger
// for an entry that does not fit in one). A block is left with at most a
// quarter of it unused.
const ringBlock = 64 << 10

// ringEntry is an entry as push takes it and at returns it; the strings and
// data that at returns point into the ring's blocks.
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

// ringSlot is an entry as the ring stores it: its bytes, in block blk from
// off, are key, topic, event, connID, connUser and data, in that order.
type ringSlot struct {
	seq, prev                                 uint64
	blk, off                                  uint32
	keyLen, topicLen, eventLen, idLen, usrLen uint32
	dataLen                                   uint32
	bad                                       bool
}

func (s *ringSlot) len() int {
	return int(s.keyLen) + int(s.topicLen) + int(s.eventLen) + int(s.idLen) + int(s.usrLen) + int(s.dataLen)
}

func newRing(events, maxBytes int) *ring {
	if events <= 0 {
		return nil
	}
	return &ring{buf: make([]ringSlot, min(events, 1024)), max: events, maxBytes: maxBytes, lastByKey: make(map[string]uint64)}
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
		grown := make([]ringSlot, min(2*len(g.buf), g.max))
		k := copy(grown, g.buf[g.head:])
		copy(grown[k:], g.buf[:g.head])
		g.buf, g.head = grown, 0
	}
	size := g.size(&e)
	for g.n > 0 && (g.n == len(g.buf) || g.bytes+size > g.maxBytes) {
		old := &g.buf[g.head]
		g.bytes -= old.len() + 64
		if key := g.entry(old).key; g.lastByKey[key] == old.seq {
			delete(g.lastByKey, key)
		}
		*old = ringSlot{}
		g.head = (g.head + 1) % len(g.buf)
		g.n--
	}
	g.dropBlocks()
	slot := g.store(&e)
	key := g.entry(&slot).key // the ring's copy: the map holds no NATS message
	slot.prev = g.lastByKey[key]
	g.lastByKey[key] = e.seq
	g.buf[(g.head+g.n)%len(g.buf)] = slot
	g.n++
	g.bytes += size
}

// store copies e's bytes into the blocks and returns its slot.
func (g *ring) store(e *ringEntry) ringSlot {
	s := ringSlot{
		seq: e.seq, bad: e.bad,
		keyLen: uint32(len(e.key)), topicLen: uint32(len(e.topic)), eventLen: uint32(len(e.event)),
		idLen: uint32(len(e.connID)), usrLen: uint32(len(e.connUser)), dataLen: uint32(len(e.data)),
	}
	n := s.len()
	if n == 0 {
		return s
	}
	last := len(g.blocks) - 1
	if last < 0 || n > cap(g.blocks[last])-len(g.blocks[last]) {
		if last >= 0 && cap(g.blocks[last])-len(g.blocks[last]) > ringBlock/4 {
			// A large entry leaves much of the block unused: keep only
			// what is used (offsets stay valid; replays holding the old
			// block keep it until they are done).
			g.blocks[last] = slices.Clip(slices.Clone(g.blocks[last]))
		}
		g.blocks = append(g.blocks, make([]byte, 0, max(n, ringBlock)))
		last++
	}
	b := g.blocks[last]
	s.blk, s.off = g.base+uint32(last), uint32(len(b))
	b = append(b, e.key...)
	b = append(b, e.topic...)
	b = append(b, e.event...)
	b = append(b, e.connID...)
	b = append(b, e.connUser...)
	b = append(b, e.data...)
	g.blocks[last] = b
	return s
}

// dropBlocks forgets the blocks before the oldest entry's.
func (g *ring) dropBlocks() {
	keep := g.base + uint32(len(g.blocks)) // none
	if g.n > 0 {
		keep = g.buf[g.head].blk
		if g.buf[g.head].len() == 0 {
			return // it names no block; the next eviction looks again
		}
	}
	for len(g.blocks) > 0 && g.base < keep {
		g.blocks[0] = nil
		g.blocks = g.blocks[1:]
		g.base++
	}
}

// entry returns the entry of slot s, its strings and data in the blocks.
func (g *ring) entry(s *ringSlot) ringEntry {
	e := ringEntry{seq: s.seq, prev: s.prev, bad: s.bad}
	if s.len() == 0 {
		return e
	}
	b := g.blocks[s.blk-g.base][s.off:]
	e.key, b = cut(b, s.keyLen)
	e.topic, b = cut(b, s.topicLen)
	e.event, b = cut(b, s.eventLen)
	e.connID, b = cut(b, s.idLen)
	e.connUser, b = cut(b, s.usrLen)
	if s.dataLen > 0 {
		e.data = b[:s.dataLen:s.dataLen]
	}
	return e
}

// cut returns the first n bytes of b as a string (the bytes are never
// written again) and the rest of b.
func cut(b []byte, n uint32) (string, []byte) {
	if n == 0 {
		return "", b
	}
	return unsafe.String(&b[0], n), b[n:]
}

func (g *ring) reset() {
	clear(g.buf)
	clear(g.lastByKey)
	g.head, g.n, g.bytes = 0, 0, 0
	clear(g.blocks)
	g.blocks, g.base = g.blocks[:0], 0
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
func (g *ring) at(seq uint64) ringEntry {
	return g.entry(&g.buf[(g.head+int(seq-g.first()))%len(g.buf)])
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
