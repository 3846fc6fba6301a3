package relay

import (
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/sserelay/sserelay/relay/sse"
	"github.com/sserelay/sserelay/relay/subject"
)

// A hub is the registry of one relay's open sessions, keyed by
// "<app>.<feed>", and the dispatcher's side of it: deliver moves the cursor
// (the last stream sequence dispatched) and queues each event for the
// sessions that want it, under the same lock under which a session
// registers and takes the cursor. That lock is what makes a resume exact:
// the session reads (E, cursor] from the store and gets everything above the
// cursor in its queue.
//
// Lock order. A goroutine that holds a lock may take the locks to its right,
// never one to its left:
//
//	liveConsumer.mu -> session.wmu -> hub.mu -> session.mu
//	session.wmu -> keepalives.mu, poller.mu
//
// Who takes which:
//   - liveConsumer.mu is held while the consumer hands a message to the
//     dispatcher (deliver), so that two generations never dispatch at once;
//     nothing under the hub takes it.
//   - session.wmu is held by the session's goroutine while it writes (on
//     Linux a parked session has none: the goroutine a kick borrows takes
//     it); it takes hub.mu in restart, which takes session.mu to empty the
//     queue. At the start and end of a stream it takes keepalives.mu and
//     poller.mu (add, remove), which take no other lock.
//   - hub.mu is held by deliver, register, unregister, restart, drain and
//     abortAll; under it they take session.mu (enqueue, enqueueFanned,
//     idle, restart, abortAll). Kicks under them take no lock: a parked
//     session's goroutine is started, and takes wmu on its own.
//   - The dispatcher, holding hub.mu, wants the wmu of an idle session to
//     write to it directly: against the order, so only with TryLock, which
//     never waits. It writes after releasing hub.mu, still holding wmu.
//   - The fan-out goroutines and the keepalives' goroutine hold no lock when
//     they take a session's wmu, with TryLock (a session someone else writes
//     to is kicked instead); under it they take session.mu. The keepalives
//     hold keepalives.mu only to list the silent streams, the poller
//     poller.mu only to look sessions up: neither writes nor kicks under it.
//
// The ring and the cursor are guarded by hub.mu too.
type hub struct {
	prefix     string // subject prefix
	limits     queueLimits
	maxStreams int // 0: no limit
	maxPerUser int // 0 or -1: no limit
	scanBatch  int // events copied per lock hold by a large ring replay
	log        *slog.Logger
	metrics    *metrics

	mu       sync.Mutex
	cursor   uint64 // last stream sequence dispatched
	feeds    map[string]feedSet
	users    map[string]int // open sessions by user; no entry at 0
	ring     *ring          // recent events for fast resumes; nil when off
	draining bool           // no registration from now on

	open    atomic.Int64  // registered sessions; changed under mu, read anywhere
	seen    atomic.Uint64 // the cursor, for readers that must not wait for mu (a scrape)
	drained chan struct{} // closed under mu once draining and no session is registered

	expiries expiries // token expiries of the sessions; its own lock, taken under session.wmu

	// directBuf is the dispatcher's reusable list of idle sessions it
	// writes to after releasing the lock (owned by the dispatcher).
	directBuf []*session
}

// newHub returns an empty hub for cfg, whose defaults are set.
func newHub(cfg *Config, m *metrics) *hub {
	return &hub{
		prefix:     cfg.SubjectPrefix,
		limits:     queueLimits{events: cfg.QueueEvents, bytes: cfg.QueueBytes},
		maxStreams: cfg.MaxStreams,
		maxPerUser: cfg.MaxStreamsPerUser,
		users:      make(map[string]int),
		scanBatch:  min(max(cfg.ReplayBatch, 1), 256),
		log:        cfg.Logger,
		metrics:    m,
		feeds:      make(map[string]feedSet),
		ring:       newRing(cfg.RingEvents, cfg.RingBytes),
		drained:    make(chan struct{}),
	}
}

// registration is the outcome of hub.register.
type registration int

const (
	registered      registration = iota
	refusedDraining              // the relay is draining: send the client away
	refusedFull                  // MaxStreams sessions are open: send the client away
	refusedUserFull              // MaxStreamsPerUser sessions of the user are open
)

func (g registration) String() string {
	switch g {
	case registered:
		return "registered"
	case refusedDraining:
		return "draining"
	case refusedFull:
		return "full"
	case refusedUserFull:
		return "user-full"
	}
	return "registration(?)"
}

// register adds s to the registry unless the hub is draining or full, and
// returns the cursor at that instant: every event above it will be queued
// for s. A registered session must be unregistered once.
func (h *hub) register(s *session) (uint64, registration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if g := h.admitLocked(s.user); g != registered {
		return 0, g
	}
	h.users[s.user]++
	h.open.Add(1)
	for _, k := range s.keys {
		h.feeds[k] = h.feeds[k].add(s)
	}
	return h.cursor, registered
}

// peek returns what register would return now for a session of user,
// registering nothing.
func (h *hub) peek(user string) registration {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.admitLocked(user)
}

// admitLocked says whether a new session of user may register: registered,
// or why not.
func (h *hub) admitLocked(user string) registration {
	switch {
	case h.draining:
		return refusedDraining
	case h.maxStreams > 0 && h.open.Load() >= int64(h.maxStreams):
		return refusedFull
	case h.maxPerUser > 0 && h.users[user] >= h.maxPerUser:
		return refusedUserFull
	}
	return registered
}

// unregister removes a registered session.
func (h *hub) unregister(s *session) {
	h.mu.Lock()
	for _, k := range s.keys {
		if set := h.feeds[k].remove(s); set.len() > 0 {
			h.feeds[k] = set
		} else {
			delete(h.feeds, k)
		}
	}
	if h.users[s.user]--; h.users[s.user] <= 0 {
		delete(h.users, s.user)
	}
	h.open.Add(-1)
	h.closeDrainedLocked()
	h.mu.Unlock()
}

// closeDrainedLocked closes drained when the last session of a draining
// hub is gone; register refuses from the start of the drain, so the count
// cannot rise again.
func (h *hub) closeDrainedLocked() {
	if h.draining && h.open.Load() == 0 {
		select {
		case <-h.drained:
		default:
			close(h.drained)
		}
	}
}

// openStreams returns the number of registered sessions.
func (h *hub) openStreams() int64 { return h.open.Load() }

// drain refuses registrations from now on and signals every session, which
// then sees the relay's draining flag and ends.
func (h *hub) drain() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.draining = true
	h.closeDrainedLocked()
	h.signalAllLocked()
}

// wait returns when every registered session is unregistered; it must
// follow drain, after which no registration can race it.
func (h *hub) wait() { <-h.drained }

// drainedCh is closed when wait would return: for a select with a deadline,
// which needs no goroutine to wait.
func (h *hub) drainedCh() <-chan struct{} { return h.drained }

// signalAllLocked wakes every session for something other than an event.
func (h *hub) signalAllLocked() {
	for _, set := range h.feeds {
		for s := range set.all {
			s.signal()
		}
	}
}

// abortAll closes the connection of every session that holds one.
func (h *hub) abortAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, set := range h.feeds {
		for s := range set.all {
			s.mu.Lock()
			if s.conn != nil {
				_ = s.conn.Close()
			}
			s.mu.Unlock()
			s.signal() // a parked session has no write to fail: it must look
		}
	}
}

// setCursor sets the cursor before the first delivery.
func (h *hub) setCursor(seq uint64) {
	h.mu.Lock()
	h.cursor = seq
	h.seen.Store(seq)
	h.mu.Unlock()
}

// cursorNow returns the last stream sequence dispatched.
func (h *hub) cursorNow() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.cursor
}

// restart empties s's queue and returns the cursor, atomically with respect
// to deliver: the session then catches up to it from the store. Called by
// the session's goroutine with s.wmu held.
func (h *hub) restart(s *session) uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	s.mu.Lock()
	clear(s.queue)
	s.queue, s.queueBytes, s.overflow = s.queue[:0], 0, false
	s.mu.Unlock()
	return h.cursor
}

// deliver dispatches one stored event: it moves the cursor and queues the
// event, encoded once, for every local session that wants it. Only the
// dispatcher calls it, one event at a time, in stream order.
func (h *hub) deliver(seq uint64, subj, event, connID, connUser string, data []byte) {
	key, topic, ok := subject.Split(h.prefix, subj)
	if !ok {
		h.metrics.dropped.Add(1)
		h.log.Warn("dropped event: subject is not <prefix>.<app>.<feed>[.<topic>]", "subject", subj, "seq", seq)
	} else if event != "" && !sse.SafeEventName(event) {
		ok = false
		h.metrics.dropped.Add(1)
		h.log.Warn("dropped event: Sse-Event cannot be written safely", "subject", subj, "seq", seq, "event", event)
	}

	direct := h.deliverLocked(seq, key, topic, event, connID, connUser, data, ok)
	// Writes to idle connections happen outside the registry lock: they are
	// quick (non-blocking) but many, and registrations must not wait on them.
	if direct.fanned != nil {
		spread(direct.fanned)
	}
	for _, s := range direct.sessions {
		s.writeDirect(direct.f)
		s.wmu.Unlock()
	}
	clear(direct.sessions)
	h.directBuf = direct.sessions[:0]
}

// dropUndecodable moves the cursor past an event whose NATS header block
// cannot be decoded: its name and exclusion are unknown, so it is written to
// no one, now or on a replay (its ring entry is marked bad; a store read
// cannot decode it either).
func (h *hub) dropUndecodable(seq uint64, subj string) {
	h.metrics.dropped.Add(1)
	h.log.Warn("dropped event: its NATS header block cannot be decoded", "subject", subj, "seq", seq)
	key, topic, _ := subject.Split(h.prefix, subj)
	direct := h.deliverLocked(seq, key, topic, "", "", "", nil, false)
	h.directBuf = direct.sessions[:0]
}

// maxDirect bounds the direct writes per event: written by the dispatcher
// alone, a large broadcast would wait for one goroutine; the rest goes to
// the fan-out goroutines (parked sessions) or the sessions' own goroutines,
// which write in parallel. `sserelay bench --mode broadcast` measures the
// latency it keeps, BenchmarkDispatchBroadcast the dispatcher's share.
const maxDirect = 32

type directWrites struct {
	f        *frame
	sessions []*session  // each with wmu held
	fanned   *[]*session // parked sessions for the fan-out goroutines; nil: none
}

func (h *hub) deliverLocked(seq uint64, key, topic, event, connID, connUser string, data []byte, ok bool) directWrites {
	h.mu.Lock()
	defer h.mu.Unlock()
	direct := directWrites{sessions: h.directBuf[:0]}
	h.directBuf = nil
	if seq <= h.cursor {
		return direct // already dispatched; the consumer never does this, but the cursor must not go back
	}
	if h.cursor != 0 && seq > h.cursor+1 {
		// The consumer filters the whole stream, so a jump means events were
		// trimmed while the relay could not read them (a long NATS outage).
		h.log.Warn("events trimmed before dispatch", "from", h.cursor+1, "to", seq-1)
		h.resetAllLocked(seq-1, ResetHistoryGone)
	}
	h.cursor = seq
	h.seen.Store(seq)
	h.metrics.dispatched.Add(1)
	if h.ring != nil {
		h.ring.push(ringEntry{seq: seq, key: key, topic: topic, event: event, connID: connID, connUser: connUser, data: data, bad: !ok})
	}
	if !ok {
		return direct
	}
	set := h.feeds[key]
	large := set.len() > maxDirect
	for s := range set.all {
		if !subject.TopicMatches(s.topics, topic) || excludes(connID, connUser, s.connID, s.user) {
			continue
		}
		if direct.f == nil {
			// Sized for the usual case (no line breaks in data): one allocation.
			buf := make([]byte, 0, 40+len(event)+len(data))
			direct.f = &frame{seq: seq, buf: sse.AppendEvent(buf, seq, event, data)}
		}
		// An idle session is written to directly (after the lock); a busy
		// one gets the event in its queue, behind what it already has. A
		// large fan-out goes through the queues too: the sessions'
		// goroutines write in parallel, the dispatcher alone would not.
		if len(direct.sessions) < maxDirect && s.wmu.TryLock() {
			if s.idle() {
				direct.sessions = append(direct.sessions, s)
				continue
			}
			s.wmu.Unlock()
		}
		if large && s.parks.Load() {
			if s.enqueueFanned(direct.f, h.limits) {
				if direct.fanned == nil {
					direct.fanned = fanoutLists.Get().(*[]*session)
				}
				*direct.fanned = append(*direct.fanned, s)
			}
			continue
		}
		s.enqueue(direct.f, h.limits)
	}
	return direct
}

// resetAllLocked queues a reset event with id seq for every session, once
// each whatever the number of its feeds.
func (h *hub) resetAllLocked(seq uint64, reason string) {
	f := resetFrame(seq, reason)
	seen := make(map[*session]struct{})
	for _, set := range h.feeds {
		for s := range set.all {
			if _, dup := seen[s]; !dup {
				seen[s] = struct{}{}
				s.enqueue(f, h.limits)
			}
		}
	}
	h.metrics.resets(reason).Add(float64(len(seen)))
}

// A feedSet is the registered sessions of one feed. Most feeds have one
// session (a user's own feed), which needs no map: a map per feed was ~130
// bytes of every idle per-user stream.
type feedSet struct {
	one  *session              // the only session, while many is nil
	many map[*session]struct{} // two or more (or fewer after removals)
}

func (f feedSet) len() int {
	if f.many != nil {
		return len(f.many)
	}
	if f.one != nil {
		return 1
	}
	return 0
}

// add returns f with s.
func (f feedSet) add(s *session) feedSet {
	switch {
	case f.many != nil:
		f.many[s] = struct{}{}
	case f.one == nil:
		f.one = s
	default:
		f.many = map[*session]struct{}{f.one: {}, s: {}}
		f.one = nil
	}
	return f
}

// remove returns f without s.
func (f feedSet) remove(s *session) feedSet {
	if f.many != nil {
		delete(f.many, s)
	} else if f.one == s {
		f.one = nil
	}
	return f
}

// all yields the sessions of f.
func (f feedSet) all(yield func(*session) bool) {
	if f.one != nil {
		yield(f.one)
		return
	}
	for s := range f.many {
		if !yield(s) {
			return
		}
	}
}
