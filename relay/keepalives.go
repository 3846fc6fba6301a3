package relay

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// keepalives keep every stream of a relay from falling silent, from one
// goroutine: where a session had a timer that woke its goroutine for each
// comment, the keepalives look at every stream a few times per interval
// and write a comment to those silent for most of it, straight to the
// connection of an idle one (a non-blocking write, like the dispatcher's)
// or by kicking the session. The goroutine runs while streams are open.
//
// The rule is that no stream is silent longer than the interval, counted
// from the last byte written. A look every tick (interval/16) writes to the
// streams silent for interval - 1.5 tick: so a stream is silent for at most
// interval - tick/2, and half a tick (0.47 s at 15 s) is left for a late
// look; a stream that only gets keepalives gets one every 15 ticks, not
// much more often than the interval.
//
// The time of each stream's last write is kept in slots of dense arrays,
// not in the sessions: a look reads 8 bytes per stream in a row, where
// loading a field of each session was a cache miss per stream (4 ms per
// look at 10,000 streams, a quarter of an idle relay's CPU).
type keepalives struct {
	tick    time.Duration
	silence int64 // nanoseconds of silence after which a stream is due
	epoch   time.Time

	mu     sync.Mutex
	chunks []*kaChunk
	free   []int32       // free slots, the lowest last
	n      int           // slots taken
	stop   chan struct{} // closed to end the goroutine; nil while none runs
	done   chan struct{} // closed by the last goroutine started, when it ends
}

// kaChunkLen is the number of slots of a chunk: 12 KiB.
const kaChunkLen = 768

// kaFree is the last write of a free slot: never silent.
const kaFree = math.MaxInt64

// A kaChunk holds the slots of kaChunkLen streams; a chunk never moves, so
// that a session can keep a pointer to its slot's clock.
type kaChunk struct {
	last [kaChunkLen]atomic.Int64 // keepalives.now() at the last write; kaFree: the slot is free
	sess [kaChunkLen]*session
}

func newKeepalives(interval time.Duration) *keepalives {
	tick := max(interval/16, time.Millisecond)
	return &keepalives{tick: tick, silence: int64(interval - tick - tick/2), epoch: time.Now()}
}

// now is the clock of the last writes: monotonic, in nanoseconds.
func (k *keepalives) now() int64 { return int64(time.Since(k.epoch)) }

// silent reports whether s must get a keepalive now. Called with s.wmu held.
func (k *keepalives) silent(s *session) bool {
	return s.lastWrite != nil && k.now()-s.lastWrite.Load() >= k.silence
}

// add watches s until remove. Called with s.wmu held, before s writes.
func (k *keepalives) add(s *session) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.free) == 0 {
		c := new(kaChunk)
		base := int32(len(k.chunks) * kaChunkLen)
		for i := kaChunkLen - 1; i >= 0; i-- {
			c.last[i].Store(kaFree)
			k.free = append(k.free, base+int32(i))
		}
		k.chunks = append(k.chunks, c)
	}
	slot := k.free[len(k.free)-1]
	k.free = k.free[:len(k.free)-1]
	c := k.chunks[slot/kaChunkLen]
	c.sess[slot%kaChunkLen] = s
	c.last[slot%kaChunkLen].Store(k.now())
	s.lastWrite, s.kaSlot = &c.last[slot%kaChunkLen], slot
	k.n++
	if k.stop == nil {
		k.stop, k.done = make(chan struct{}), make(chan struct{})
		go k.run(k.stop, k.done)
	}
}

// remove stops watching s; the goroutine ends with the last stream. Called
// with s.wmu held: nobody writes to s, so nobody touches its slot.
func (k *keepalives) remove(s *session) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if s.lastWrite == nil {
		return
	}
	slot := s.kaSlot
	c := k.chunks[slot/kaChunkLen]
	c.sess[slot%kaChunkLen] = nil
	c.last[slot%kaChunkLen].Store(kaFree)
	s.lastWrite = nil
	k.free = append(k.free, slot)
	k.n--
	if k.n == 0 {
		close(k.stop)
		k.stop = nil
		k.chunks, k.free = nil, nil // a burst's many chunks are not kept
	}
}

// wait returns once the goroutine has ended, or at once with false while
// streams are still watched (it runs until the last is removed).
func (k *keepalives) wait() bool {
	k.mu.Lock()
	running, done := k.stop != nil, k.done
	k.mu.Unlock()
	if running {
		return false
	}
	if done != nil {
		<-done
	}
	return true
}

func (k *keepalives) run(stop, done chan struct{}) {
	defer close(done)
	t := time.NewTicker(k.tick)
	defer t.Stop()
	var due []*session
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		due = k.collect(due[:0])
		for _, s := range due {
			s.keepaliveNow()
		}
		clear(due)
	}
}

// collect appends the silent sessions to due: the look reads the slots in
// a row under the lock, the writes happen after it.
func (k *keepalives) collect(due []*session) []*session {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.now()
	for _, c := range k.chunks {
		for i := range c.last {
			if now-c.last[i].Load() >= k.silence {
				due = append(due, c.sess[i])
			}
		}
	}
	return due
}

// keepaliveNow sends s a keepalive, from the keepalives' goroutine: written
// straight to an idle connection, else by the session's goroutine.
func (s *session) keepaliveNow() {
	if !s.wmu.TryLock() {
		// Its goroutine writes (it has bytes to send) or it ended. A resume
		// waiting for a replay slot keeps itself alive (takeReplaySlot).
		return
	}
	if !s.r.keepalives.silent(s) {
		s.wmu.Unlock()
		return
	}
	if s.idle() {
		s.writeRaw(keepaliveComment)
		s.wmu.Unlock()
		return
	}
	s.wmu.Unlock()
	s.keepaliveDue.Store(true)
	s.signal()
}
