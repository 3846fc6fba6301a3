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
// from the last byte written: a look every tick finds a stream silent for
// interval-tick at most tick after it became so.
type keepalives struct {
	interval time.Duration
	tick     time.Duration // interval/4: the lateness a look may have is what is left
	epoch    time.Time

	mu       sync.Mutex
	sessions []*session    // session.wheelIdx is the index
	stop     chan struct{} // closed to end the goroutine; nil while none runs
}

func newKeepalives(interval time.Duration) *keepalives {
	return &keepalives{interval: interval, tick: max(interval/4, time.Millisecond), epoch: time.Now()}
}

// now is the clock of lastWrite: monotonic, in nanoseconds.
func (k *keepalives) now() int64 { return int64(time.Since(k.epoch)) }

// silent reports whether s must get a keepalive now.
func (k *keepalives) silent(s *session) bool {
	return k.now()-s.lastWrite.Load() >= int64(k.interval-k.tick)
}

// add watches s until remove.
func (k *keepalives) add(s *session) {
	k.mu.Lock()
	defer k.mu.Unlock()
	s.wheelIdx = len(k.sessions)
	k.sessions = append(k.sessions, s)
	if k.stop == nil {
		k.stop = make(chan struct{})
		go k.run(k.stop)
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

func (k *keepalives) run(stop chan struct{}) {
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
