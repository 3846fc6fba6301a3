package relay

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/sserelay/sserelay/relay/sse"
	"github.com/sserelay/sserelay/relay/subject"
)

// errHistoryGone means the store no longer has the first event a client needs.
var errHistoryGone = errors.New("history gone")

// replayFilter selects the events of one session from the store.
type replayFilter struct {
	subjects    []string // each a literal subject or ending in ".>"
	keys        []string // the same filter as registry keys and topics
	topics      []string
	excludeConn string // skip events published by this connection
	user        string // ... when published by this user or without X-Connection-User
}

func (f *replayFilter) matches(key, topic string) bool {
	return slices.Contains(f.keys, key) && subject.TopicMatches(f.topics, topic)
}

// catchUp brings the client from s.lastSent to c by reading the store, or
// tells it with a reset event that it cannot. Live events above c wait in the
// queue meanwhile.
func (s *session) catchUp(ctx context.Context, c uint64) error {
	from := s.lastSent
	if from >= c {
		if from > c {
			// The client is ahead of this relay: fine if the stream has its
			// id (the cursor will get there); another stream's id if not.
			last, err := s.r.lastSeq(ctx)
			if err != nil {
				return storeFailed(err)
			}
			if from > last {
				return s.reset(c, ResetUnknownID)
			}
		}
		return nil
	}
	start := time.Now()
	if err := s.takeReplaySlot(ctx); err != nil {
		return err
	}
	defer s.r.releaseReplaySlot(s.user)
	n := 0
	var werr error // a failed write to the client, told apart from the store's errors
	var buf []byte // encoding buffer, not kept by the session: idle ones keep no buffer
	st, err := s.r.replay(ctx, s.filter(), from, c, 0, func(ev storedEvent) error {
		buf = sse.AppendEvent(buf[:0], ev.seq, ev.event, ev.data)
		if werr = s.write(buf); werr != nil {
			return werr
		}
		s.lastSent = ev.seq
		n++
		if n%64 == 0 {
			select {
			case <-s.r.drainCh:
				return closeDraining // the client resumes from lastSent elsewhere
			default:
			}
			werr = s.flush()
			return werr
		}
		return nil
	})
	s.r.metrics.caughtUp(st, start)
	s.r.metrics.delivered.Add(float64(n))
	if errors.Is(err, errHistoryGone) {
		return s.reset(c, ResetHistoryGone)
	}
	switch {
	case err == nil:
	case errors.Is(err, closeDraining), werr != nil:
		return err
	case ctx.Err() != nil:
		return closeClientGone // the read ended because the client left
	default:
		return storeFailed(fmt.Errorf("replay (%d, %d]: %w", from, c, err))
	}
	s.lastSent = c
	return s.flush()
}

// takeReplaySlot waits for a replay slot of the user and one of the
// MaxReplays. In a reconnect storm that can take longer than the keepalive
// interval, so the stream gets its keepalives meanwhile: a proxy must not
// cut it while it waits.
func (s *session) takeReplaySlot(ctx context.Context) error {
	tick := time.NewTicker(s.r.keepalives.tick)
	defer tick.Stop()
	return s.r.takeReplaySlot(ctx, s.user, tick.C, s.keepalive)
}

// reset tells the client it must resync, with id c so that a reconnect
// right after it resumes from the live point.
func (s *session) reset(c uint64, reason string) error {
	s.r.metrics.resets(reason).Add(1)
	s.r.log.Debug("stream reset", "conn", s.connID, "user", s.user, "reason", reason, "from", s.lastSent, "to", c)
	if err := s.write(resetFrame(c, reason).buf); err != nil {
		return err
	}
	s.lastSent = c
	return s.flush()
}

func (s *session) filter() replayFilter {
	var subjects []string
	pfx := s.r.cfg.SubjectPrefix + "."
	for _, k := range s.keys {
		if len(s.topics) == 0 {
			subjects = append(subjects, pfx+k, pfx+k+".>")
			continue
		}
		for _, t := range s.topics {
			subjects = append(subjects, pfx+k+"."+t, pfx+k+"."+t+".>")
		}
	}
	return replayFilter{subjects: subjects, keys: s.keys, topics: s.topics, excludeConn: s.connID, user: s.user}
}
