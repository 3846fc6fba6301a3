package relay

import (
	"container/heap"
	"sync"
	"time"
)

// expiries end the streams whose token expires, with one timer for all of
// them: a timer per stream (time.AfterFunc and its closure) was ~140 bytes
// of every idle stream's heap. The zero value is ready; the timer exists
// while an expiry is pending.
type expiries struct {
	mu    sync.Mutex
	q     expiryQueue
	timer *time.Timer // nil until the first expiry
	armed int64       // the timer's deadline in Unix nanoseconds; 0: stopped
}

// add makes s expire at t: s.expired is set and s signalled. Called once
// per session, with s.wmu held; remove undoes it.
func (e *expiries) add(s *session, t time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	// heap.Push without its argument in an interface (an allocation per
	// stream): append, then move up.
	s.expIdx = int32(len(e.q))
	e.q = append(e.q, expiry{at: t.UnixNano(), s: s})
	heap.Fix(&e.q, len(e.q)-1)
	e.arm()
}

// remove forgets s's expiry, if it has one that did not fire.
func (e *expiries) remove(s *session) {
	e.mu.Lock()
	defer e.mu.Unlock()
	i := int(s.expIdx)
	if i < 0 || i >= len(e.q) || e.q[i].s != s {
		return
	}
	// heap.Remove without Pop's result in an interface (an allocation per
	// stream): the last in i's place, then moved down or up.
	n := len(e.q) - 1
	if i != n {
		e.q.Swap(i, n)
	}
	e.q[n].s.expIdx = -1
	e.q[n] = expiry{}
	e.q = e.q[:n]
	if i != n {
		heap.Fix(&e.q, i)
	}
	e.arm()
}

// arm sets the timer for the earliest expiry, or stops it when none is
// left. Called with mu held.
func (e *expiries) arm() {
	if len(e.q) == 0 {
		if e.timer != nil && e.armed != 0 {
			e.timer.Stop()
		}
		e.armed = 0
		e.q = nil // a burst's large queue is not kept
		return
	}
	next := e.q[0].at
	if next == e.armed {
		return
	}
	e.armed = next
	d := time.Until(time.Unix(0, next))
	if e.timer == nil {
		e.timer = time.AfterFunc(d, e.fire)
		return
	}
	e.timer.Reset(d)
}

// fire expires the sessions that are due. The signals go out after the
// lock: a kick takes no lock, but the list can be long.
func (e *expiries) fire() {
	now := time.Now().UnixNano()
	var due []*session
	e.mu.Lock()
	for len(e.q) > 0 && e.q[0].at <= now {
		due = append(due, heap.Pop(&e.q).(expiry).s)
	}
	e.armed = 0
	e.arm()
	e.mu.Unlock()
	for _, s := range due {
		s.expired.Store(true)
		s.signal()
	}
}

type expiry struct {
	at int64 // Unix nanoseconds
	s  *session
}

// expiryQueue is a min-heap of expiries by time; session.expIdx is each
// one's index.
type expiryQueue []expiry

func (q expiryQueue) Len() int           { return len(q) }
func (q expiryQueue) Less(i, j int) bool { return q[i].at < q[j].at }
func (q expiryQueue) Swap(i, j int) {
	q[i], q[j] = q[j], q[i]
	q[i].s.expIdx, q[j].s.expIdx = int32(i), int32(j)
}

func (q *expiryQueue) Push(x any) {
	e := x.(expiry)
	e.s.expIdx = int32(len(*q))
	*q = append(*q, e)
}

func (q *expiryQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	old[len(old)-1] = expiry{}
	*q = old[:len(old)-1]
	e.s.expIdx = -1
	return e
}
