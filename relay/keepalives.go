package relay

import (
	"sync"
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
// much more often than the interval. A look is a load per stream: 19,000
// streams cost ~0.1 ms per tick.
type keepalives struct {
	interval time.Duration
	tick     time.Duration
	silence  int64 // nanoseconds of silence after which a stream is due
	epoch    time.Time

	mu       sync.Mutex
	sessions []*session    // session.wheelIdx is the index
	stop     chan struct{} // closed to end the goroutine; nil while none runs
	done     chan struct{} // closed by the last goroutine started, when it ends
}

func newKeepalives(interval time.Duration) *keepalives {
	tick := max(interval/16, time.Millisecond)
	return &keepalives{interval: interval, tick: tick, silence: int64(interval - tick - tick/2), epoch: time.Now()}
}

// now is the clock of lastWrite: monotonic, in nanoseconds.
func (k *keepalives) now() int64 { return int64(time.Since(k.epoch)) }

// silent reports whether s must get a keepalive now.
func (k *keepalives) silent(s *session) bool {
	return k.now()-s.lastWrite.Load() >= k.silence
}

// add watches s until remove.
func (k *keepalives) add(s *session) {
	k.mu.Lock()
	defer k.mu.Unlock()
	s.wheelIdx = len(k.sessions)
	k.sessions = append(k.sessions, s)
	if k.stop == nil {
		k.stop, k.done = make(chan struct{}), make(chan struct{})
		go k.run(k.stop, k.done)
	}
}

// remove stops watching s; the goroutine ends with the last stream.
func (k *keepalives) remove(s *session) {
	k.mu.Lock()
	defer k.mu.Unlock()
	i, last := s.wheelIdx, len(k.sessions)-1
	if i < 0 || i > last || k.sessions[i] != s {
		return
	}
	k.sessions[i] = k.sessions[last]
	k.sessions[i].wheelIdx = i
	k.sessions[last] = nil
	k.sessions = k.sessions[:last]
	s.wheelIdx = -1
	if last == 0 {
		close(k.stop)
		k.stop = nil
		k.sessions = nil // a burst's large list is not kept
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

// collect appends the silent sessions to due: the look is a load per
// stream under the lock, the writes happen after it.
func (k *keepalives) collect(due []*session) []*session {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, s := range k.sessions {
		if k.silent(s) {
			due = append(due, s)
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
