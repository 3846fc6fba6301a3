package relay

import (
	"runtime"
	"sync"
)

// A large fan-out to parked sessions is written by a few goroutines
// borrowed per event, one per core, instead of waking a goroutine per
// recipient: the dispatcher appends the frame to each queue, marks the
// session fanned, and hands the marked ones over after releasing the
// registry lock. Each writes a session's whole queue with one non-blocking
// writev. The dispatcher does not wait: a session whose last write is not
// done yet stays marked and gets the next frames in its queue, so that a
// slow moment coalesces events into fewer writes instead of queueing work.
// Whatever does not fit in the socket goes to the session's own goroutine.

// fanoutChunk is the smallest share of a fan-out worth a goroutine.
const fanoutChunk = 64

// maxIOV is the most buffers one writev takes (IOV_MAX on Linux).
const maxIOV = 1024

var fanoutLists = sync.Pool{New: func() any { return new([]*session) }}

// spread writes the queues of the sessions in *list, marked fanned, from
// up to GOMAXPROCS goroutines. It takes list over.
func spread(list *[]*session) {
	all := *list
	w := min(runtime.GOMAXPROCS(0), (len(all)+fanoutChunk-1)/fanoutChunk)
	if w <= 1 {
		go writeFanout(list, all)
		return
	}
	per := (len(all) + w - 1) / w
	var wg sync.WaitGroup
	for i := 0; i < len(all); i += per {
		wg.Add(1)
		go func(part []*session) {
			defer wg.Done()
			writeFanout(nil, part)
		}(all[i:min(i+per, len(all))])
	}
	go func() { // returns the list once every share is written
		wg.Wait()
		clear(all)
		*list = all[:0]
		fanoutLists.Put(list)
	}()
}

// writeFanout writes each session's queue; list, if not nil, is returned
// to the pool after.
func writeFanout(list *[]*session, part []*session) {
	for _, s := range part {
		s.writeFanned()
	}
	if list != nil {
		clear(part)
		*list = part[:0]
		fanoutLists.Put(list)
	}
}

// enqueueFanned appends f to the queue of a parked-mode session without
// waking anyone, and reports whether the session must be handed to the
// fan-out (it was not marked yet). On overflow the session's goroutine is
// kicked to catch up.
func (s *session) enqueueFanned(f *frame, lim queueLimits) bool {
	s.mu.Lock()
	if s.overflow {
		s.mu.Unlock()
		return false
	}
	if len(s.queue) >= lim.events || s.queueBytes+len(f.buf) > lim.bytes {
		clear(s.queue)
		s.queue, s.queueBytes, s.overflow = s.queue[:0], 0, true
		s.mu.Unlock()
		s.kick()
		return false
	}
	s.queue = append(s.queue, f)
	s.queueBytes += len(f.buf)
	mark := !s.fanned
	s.fanned = true
	s.mu.Unlock()
	return mark
}

// writeFanned writes the queue of a session marked by enqueueFanned, from
// a fan-out goroutine. When someone else writes to it, or its queue needs
// more than a non-blocking write (an overflow, the rest of a partial
// write), the session's goroutine is kicked to do it.
func (s *session) writeFanned() {
	if !s.wmu.TryLock() {
		s.unmark()
		s.kick() // the holder, or a goroutine after it, finds the queue
		return
	}
	s.mu.Lock()
	s.fanned = false
	if len(s.queue) == 0 && !s.overflow { // its goroutine wrote it meanwhile
		s.mu.Unlock()
		s.wmu.Unlock()
		return
	}
	if s.overflow || len(s.partial) > 0 {
		s.mu.Unlock()
		s.wmu.Unlock()
		s.kick()
		return
	}
	frames := s.queue
	s.queue, s.queueBytes = s.spare[:0], 0
	s.mu.Unlock()
	s.writeFramesRaw(frames)
	clear(frames)
	s.spare = nil
	if cap(frames) <= 64 {
		s.spare = frames[:0]
	}
	s.wmu.Unlock()
}

func (s *session) unmark() {
	s.mu.Lock()
	s.fanned = false
	s.mu.Unlock()
}

// writeFramesRaw writes the frames the client does not have yet with one
// non-blocking write; the rest is left for the session's goroutine, as in
// writeRaw. Called with wmu held, nothing partial.
func (s *session) writeFramesRaw(frames []*frame) {
	var iov [8][]byte
	bufs := iov[:0]
	total := 0
	for _, f := range frames {
		if f.seq <= s.lastSent {
			continue
		}
		bufs = append(bufs, f.buf)
		total += len(f.buf)
		s.lastSent = f.seq
	}
	if len(bufs) == 0 {
		return
	}
	s.r.metrics.delivered.Add(float64(len(bufs))) // before the client can see them
	if len(bufs) == 1 {
		s.writeRaw(bufs[0])
		return
	}
	n := 0
	// writev takes at most IOV_MAX (1024 on Linux) buffers; a longer queue
	// (QueueEvents is 4,096 by default) leaves the rest as a partial write.
	err := s.raw.Control(func(fd uintptr) { n = writev(int(fd), bufs[:min(len(bufs), maxIOV)]) })
	if err != nil || n < 0 {
		n = 0
	}
	s.r.metrics.bytes.Add(float64(n))
	s.touch()
	if n == total {
		return
	}
	rest := make([]byte, 0, total-n)
	for _, b := range bufs {
		if n >= len(b) {
			n -= len(b)
			continue
		}
		rest = append(rest, b[n:]...)
		n = 0
	}
	s.partial = rest
	s.kick()
}
