package relay

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sserelay/sserelay/relay/sse"
)

// storeReader sends Direct Get requests and reads their replies on one inbox.
type storeReader struct {
	r     *Relay
	sub   *nats.Subscription
	ch    chan *nats.Msg
	inbox string
	timer *time.Timer
}

// newStoreReader subscribes to a fresh inbox. A plain inbox, not one under
// the connection's response wildcard, which would receive every reply a
// second time. The channel holds one whole batch (one request is in flight
// at a time), where a synchronous subscription would allocate 64k slots.
func (r *Relay) newStoreReader() (*storeReader, error) {
	rd := &storeReader{r: r, inbox: r.cfg.Conn.NewInbox(), ch: make(chan *nats.Msg, r.cfg.ReplayBatch+8)}
	sub, err := r.cfg.Conn.ChanSubscribe(rd.inbox, rd.ch)
	if err != nil {
		return nil, fmt.Errorf("subscribe: %w", err)
	}
	// nats.go drops what does not fit in the channel: it fits, because a
	// batch is read to its end before the next request is sent, and a
	// request never asks for more than ReplayBatch messages.
	rd.sub = sub
	return rd, nil
}

func (rd *storeReader) close() {
	_ = rd.sub.Unsubscribe()
	if rd.timer != nil {
		rd.timer.Stop()
	}
}

type directGetRequest struct {
	Seq        uint64 `json:"seq"`
	NextBySubj string `json:"next_by_subj,omitempty"`
	Batch      int    `json:"batch,omitempty"`
	MaxBytes   int    `json:"max_bytes,omitempty"`
}

func (rd *storeReader) request(req directGetRequest) error {
	body, _ := json.Marshal(req)
	subj := rd.r.apiPfx + "DIRECT.GET." + rd.r.cfg.Stream
	if err := rd.r.cfg.Conn.PublishRequest(subj, rd.inbox, body); err != nil {
		return fmt.Errorf("direct get: %w", err)
	}
	return nil
}

func (rd *storeReader) next(ctx context.Context) (*nats.Msg, error) {
	if rd.timer == nil {
		rd.timer = time.NewTimer(rd.r.cfg.RequestTimeout)
	} else {
		rd.timer.Reset(rd.r.cfg.RequestTimeout)
	}
	select {
	case m := <-rd.ch:
		return m, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("direct get reply: %w", ctx.Err())
	case <-rd.timer.C:
		return nil, fmt.Errorf("direct get reply: %w", nats.ErrTimeout)
	}
}

// exists reports whether the stream still holds sequence seq.
func (rd *storeReader) exists(ctx context.Context, seq uint64) (bool, error) {
	if err := rd.request(directGetRequest{Seq: seq}); err != nil {
		return false, err
	}
	m, err := rd.next(ctx)
	if err != nil {
		return false, err
	}
	switch status := m.Header.Get("Status"); status {
	case "":
		return true, nil
	case "404":
		return false, nil
	default:
		return false, fmt.Errorf("direct get %d: status %s %s", seq, status, m.Header.Get("Description"))
	}
}

// batch reads up to ReplayBatch events of subject from sequence from on,
// keeping those up to to. next is where the following batch starts; more
// reports whether the store may hold further matching events up to to.
func (rd *storeReader) batch(ctx context.Context, subject string, from, to uint64, dst []readEvent) (evs []readEvent, next uint64, more bool, err error) {
	size := rd.r.cfg.ReplayBatch
	if span := to - from + 1; span < uint64(size) {
		size = int(span)
	}
	if err := rd.request(directGetRequest{Seq: from, NextBySubj: subject, Batch: size, MaxBytes: rd.r.cfg.ReplayBytes}); err != nil {
		return nil, 0, false, err
	}
	next, more = from, true
	for {
		m, err := rd.next(ctx)
		if err != nil {
			return nil, 0, false, err
		}
		switch status := m.Header.Get("Status"); status {
		case "":
		case "404": // nothing matches from here on
			return dst, next, false, nil
		case "204": // end of batch: it says where it stopped, even past messages we could not decode
			if ls, err := strconv.ParseUint(m.Header.Get("Nats-Last-Sequence"), 10, 64); err == nil && ls >= next {
				next = ls + 1
			}
			pending, _ := strconv.ParseUint(m.Header.Get("Nats-Num-Pending"), 10, 64)
			return dst, next, more && pending > 0 && next <= to, nil
		default:
			return nil, 0, false, fmt.Errorf("direct get %s from %d: status %s %s", subject, from, status, m.Header.Get("Description"))
		}
		seq, err := strconv.ParseUint(m.Header.Get("Nats-Sequence"), 10, 64)
		if err != nil {
			// A header block nats.go cannot decode (only a raw publisher can
			// write one): dropped, as live dispatch dropped it (and counted
			// it); the 204 at the batch's end moves the cursor past it.
			rd.r.log.Debug("replay: skipped an event whose header block cannot be decoded", "subject", subject, "after", next-1)
			continue
		}
		if seq >= next {
			next = seq + 1
		}
		if seq > to {
			more = false // past the handover point: the queue has the rest
			continue
		}
		ev := readEvent{storedEvent: storedEvent{seq: seq, event: m.Header.Get(HeaderEvent), data: m.Data},
			connUser: m.Header.Get(HeaderConnectionUser)}
		ev.connID = exclusionID(m.Header.Get(HeaderConnectionID), ev.connUser, rd.r.cfg.ExclusionWithoutUser)
		ev.bad = ev.event != "" && !sse.SafeEventName(ev.event)
		dst = append(dst, ev)
	}
}

// lastSeq asks the stream for its last sequence.
func (r *Relay) lastSeq(ctx context.Context) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.RequestTimeout)
	defer cancel()
	s, err := r.js.Stream(ctx, r.cfg.Stream)
	if err != nil {
		return 0, fmt.Errorf("stream info: %w", err)
	}
	return s.CachedInfo().State.LastSeq, nil
}
