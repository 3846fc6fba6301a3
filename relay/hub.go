package relay

import (
	"github.com/sserelay/sserelay/relay/sse"
	"github.com/sserelay/sserelay/relay/subject"
)

// deliver dispatches one stored event: it moves the cursor and queues the
// event, encoded once, for every local session that wants it.
func (r *Relay) deliver(seq uint64, subj, event, connID, connUser string, data []byte) {
	key, topic, ok := subject.Split(r.cfg.SubjectPrefix, subj)
	if !ok {
		r.metrics.dropped.Add(1)
		r.log.Warn("dropped event: subject is not <prefix>.<app>.<feed>[.<topic>]", "subject", subj, "seq", seq)
	} else if event != "" && !sse.SafeEventName(event) {
		ok = false
		r.metrics.dropped.Add(1)
		r.log.Warn("dropped event: Sse-Event cannot be written safely", "subject", subj, "seq", seq, "event", event)
	}

	direct := r.deliverLocked(seq, key, topic, event, connID, connUser, data, ok)
	// Writes to idle connections happen outside the registry lock: they are
	// quick (non-blocking) but many, and registrations must not wait on them.
	for _, s := range direct.sessions {
		s.writeDirect(direct.f)
		s.wmu.Unlock()
	}
	clear(direct.sessions)
	r.directBuf = direct.sessions[:0]
}

// maxDirect bounds the direct writes per event: written by the dispatcher
// alone, a large broadcast would wait for one goroutine instead of the
// sessions' in parallel. `sserelay bench --mode broadcast` measures the
// latency it keeps, BenchmarkDispatchBroadcast the dispatcher's share.
const maxDirect = 32

type directWrites struct {
	f        *frame
	sessions []*session // each with wmu held
}

func (r *Relay) deliverLocked(seq uint64, key, topic, event, connID, connUser string, data []byte, ok bool) directWrites {
	r.mu.Lock()
	defer r.mu.Unlock()
	direct := directWrites{sessions: r.directBuf[:0]}
	r.directBuf = nil
	if seq <= r.cursor {
		return direct // already dispatched; the consumer never does this, but the cursor must not go back
	}
	if r.cursor != 0 && seq > r.cursor+1 {
		// The consumer filters the whole stream, so a jump means events were
		// trimmed while the relay could not read them (a long NATS outage).
		r.log.Warn("events trimmed before dispatch", "from", r.cursor+1, "to", seq-1)
		r.resetAllLocked(seq-1, ResetHistoryGone)
	}
	r.cursor = seq
	r.metrics.dispatched.Add(1)
	if r.ring != nil {
		r.ring.push(ringEntry{seq: seq, key: key, topic: topic, event: event, connID: connID, connUser: connUser, data: data, bad: !ok})
	}
	if !ok {
		return direct
	}
	for s := range r.feeds[key] {
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
		s.enqueue(direct.f)
	}
	return direct
}

// resetAllLocked queues a reset event with id seq for every session.
func (r *Relay) resetAllLocked(seq uint64, reason string) {
	f := resetFrame(seq, reason)
	seen := make(map[*session]struct{})
	for _, set := range r.feeds {
		for s := range set {
			if _, dup := seen[s]; !dup {
				seen[s] = struct{}{}
				s.enqueue(f)
			}
		}
	}
}

// register adds s to the registry and returns the cursor at that instant:
// every event above it will be queued for s.
func (r *Relay) register(s *session) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, k := range s.keys {
		set := r.feeds[k]
		if set == nil {
			set = make(map[*session]struct{})
			r.feeds[k] = set
		}
		set[s] = struct{}{}
	}
	return r.cursor
}

func (r *Relay) unregister(s *session) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, k := range s.keys {
		delete(r.feeds[k], s)
		if len(r.feeds[k]) == 0 {
			delete(r.feeds, k)
		}
	}
}

// restart empties s's queue and returns the cursor, atomically with respect
// to dispatch: the session then catches up to it from the store.
func (r *Relay) restart(s *session) uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	s.mu.Lock()
	clear(s.queue)
	s.queue, s.queueBytes, s.overflow = s.queue[:0], 0, false
	s.mu.Unlock()
	return r.cursor
}

// abortAll closes the connection of every open stream that holds one.
func (r *Relay) abortAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, set := range r.feeds {
		for s := range set {
			s.mu.Lock()
			if s.conn != nil {
				_ = s.conn.Close()
			}
			s.mu.Unlock()
		}
	}
}
