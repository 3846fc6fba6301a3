package e2e_test

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ackPublisher publishes through JetStream one event at a time, each
// attempt with data of its own, and records what the stream acknowledged
// (sequence, data, when): the yardstick of the failover tests.
type ackPublisher struct {
	subject string
	n       atomic.Int64

	mu       sync.Mutex
	acked    []ackedEvent // in acknowledgement order
	attempts map[string]bool
	failures int
}

type ackedEvent struct {
	ev
	at time.Time
}

func newAckPublisher(subject string) *ackPublisher {
	return &ackPublisher{subject: subject, attempts: map[string]bool{}}
}

// run publishes over nc (which it closes at the end) until stop is closed;
// the returned channel is closed when it has stopped.
func (pp *ackPublisher) run(t *testing.T, nc *nats.Conn, who string, stop <-chan struct{}) <-chan struct{} {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer nc.Close()
		for {
			select {
			case <-stop:
				return
			default:
			}
			data := fmt.Sprintf("%s event %d", who, pp.n.Add(1))
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			ack, err := js.Publish(ctx, pp.subject, []byte(data))
			cancel()
			pp.mu.Lock()
			pp.attempts[data] = true
			if err == nil {
				pp.acked = append(pp.acked, ackedEvent{ev{seq: ack.Sequence, data: data}, time.Now()})
			} else {
				pp.failures++
			}
			pp.mu.Unlock()
			wait := 20 * time.Millisecond
			if err != nil {
				wait = 100 * time.Millisecond
			}
			select {
			case <-stop:
				return
			case <-time.After(wait):
			}
		}
	}()
	return done
}

func (pp *ackPublisher) count() int { pp.mu.Lock(); defer pp.mu.Unlock(); return len(pp.acked) }

// failed returns the number of publishes that were not acknowledged.
func (pp *ackPublisher) failed() int { pp.mu.Lock(); defer pp.mu.Unlock(); return pp.failures }

func (pp *ackPublisher) last() ackedEvent {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	return pp.acked[len(pp.acked)-1]
}

func (pp *ackPublisher) snapshot() []ackedEvent {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	return append([]ackedEvent(nil), pp.acked...)
}

// checkExact: the data events of got are in strictly increasing order, each
// once; every acknowledged event in (from, to] is there with its data and
// the id the publisher was told; anything else there is an attempt the
// publisher made (stored, but its acknowledgement was lost).
func (pp *ackPublisher) checkExact(t *testing.T, what string, got []sseEvent, from, to uint64) {
	t.Helper()
	pp.mu.Lock()
	defer pp.mu.Unlock()
	seen := map[uint64]string{}
	var prev uint64
	for _, e := range got {
		seq, _ := strconv.ParseUint(e.ID, 10, 64)
		if seq <= prev {
			t.Errorf("%s: id %d after %d", what, seq, prev)
		}
		prev = seq
		if seq <= from {
			t.Errorf("%s: id %d not after %d", what, seq, from)
		}
		seen[seq] = e.Data
		if !pp.attempts[e.Data] {
			t.Errorf("%s: event %d %q was never published", what, seq, e.Data)
		}
	}
	lost := 0
	for _, a := range pp.acked {
		if a.seq <= from || a.seq > to {
			continue
		}
		if d, ok := seen[a.seq]; !ok || d != a.data {
			if lost++; lost <= 5 {
				t.Errorf("%s: acknowledged event %d %q: got %q (present %v)", what, a.seq, a.data, d, ok)
			}
		}
	}
	if lost > 0 {
		t.Errorf("%s: %d acknowledged events missing or wrong", what, lost)
	}
}
