package relay

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// StreamOptions describe the JetStream stream that stores events.
type StreamOptions struct {
	Name          string        // default "SSE"
	SubjectPrefix string        // default "sse"; the stream takes <prefix>.>
	MaxAge        time.Duration // resume window (default 24 h)
	MaxBytes      int64         // default 1 GiB; -1 for no limit
	MaxMsgs       int64         // default -1 (no limit)
	Duplicates    time.Duration // Nats-Msg-Id window (default 2 min, at most MaxAge)
	Replicas      int           // default 1
	MemoryStorage bool          // for tests only: events do not survive a restart
	// FirstSeq is the first sequence of a stream created now (0: 1). Give
	// each new stream a start above every id an earlier stream of the same
	// name handed out (EpochSeq does), and a client holding an id of a lost
	// store is told history-gone instead of resuming at a wrong position.
	FirstSeq uint64
}

// EpochSeq returns a first sequence for a stream created at t: its time in
// microseconds. A stream that replaces a lost one starts above every id the
// lost one gave out unless that one stored more than a million events per
// second over its whole life. It stays below 2^53, so JavaScript numbers
// hold it exactly.
func EpochSeq(t time.Time) uint64 { return uint64(t.UnixMicro()) }

// ErrIncompatibleStream is returned when an existing stream cannot hold the
// relay's events without breaking its guarantees.
var ErrIncompatibleStream = errors.New("incompatible stream")

// EnsureStream creates the stream, or updates the limits of an existing one.
// It refuses a stream whose settings would make holes in the sequence (per
// subject limits, work-queue retention) or reject publishers (discard-new),
// since the relay could then not tell a client what it missed.
func EnsureStream(ctx context.Context, js jetstream.JetStream, o StreamOptions) (*jetstream.StreamInfo, error) {
	if err := o.setDefaults(); err != nil {
		return nil, err
	}
	if o.Duplicates > o.MaxAge {
		o.Duplicates = o.MaxAge
	}
	storage := jetstream.FileStorage
	if o.MemoryStorage {
		storage = jetstream.MemoryStorage
	}
	want := jetstream.StreamConfig{
		Name:              o.Name,
		Description:       "SSE Relay events; the stream sequence is the SSE id",
		Subjects:          []string{o.SubjectPrefix + ".>"},
		Retention:         jetstream.LimitsPolicy,
		Discard:           jetstream.DiscardOld,
		MaxAge:            o.MaxAge,
		MaxBytes:          o.MaxBytes,
		MaxMsgs:           o.MaxMsgs,
		MaxMsgsPerSubject: -1,
		Duplicates:        o.Duplicates,
		Storage:           storage,
		Replicas:          o.Replicas,
		AllowDirect:       true,
		// Deleting single messages would leave holes that no sequence check
		// can see; trimming from the front (limits, full purge) is fine.
		DenyDelete: true,
		FirstSeq:   o.FirstSeq,
	}
	s, err := js.Stream(ctx, o.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		s, err = js.CreateStream(ctx, want)
		if err == nil {
			return s.CachedInfo(), nil
		}
		if !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			return nil, fmt.Errorf("create stream %s: %w", o.Name, err)
		}
		// Another relay created it meanwhile (relays that start together on
		// a new stream each try, with a first sequence of their own clock):
		// use that one, as if it had been there.
		s, err = js.Stream(ctx, o.Name)
	}
	if err != nil {
		return nil, fmt.Errorf("look up stream %s: %w", o.Name, err)
	}
	have := s.CachedInfo().Config
	if err := compatible(have, want); err != nil {
		return nil, fmt.Errorf("%w: stream %s: %w", ErrIncompatibleStream, o.Name, err)
	}
	upd := have
	upd.FirstSeq = have.FirstSeq // only applies at creation
	upd.MaxAge, upd.MaxBytes, upd.MaxMsgs, upd.Duplicates = want.MaxAge, want.MaxBytes, want.MaxMsgs, want.Duplicates
	upd.AllowDirect, upd.DenyDelete = true, true
	if upd.MaxAge != have.MaxAge || upd.MaxBytes != have.MaxBytes || upd.MaxMsgs != have.MaxMsgs ||
		upd.Duplicates != have.Duplicates || !have.AllowDirect || !have.DenyDelete {
		s, err = js.UpdateStream(ctx, upd)
		if err != nil {
			return nil, fmt.Errorf("update stream %s: %w", o.Name, err)
		}
	}
	return s.CachedInfo(), nil
}

func compatible(have, want jetstream.StreamConfig) error {
	// Exactly the relay's subjects: the dispatcher reads the whole stream and
	// takes a jump in sequences for trimmed events.
	if !slices.Equal(have.Subjects, want.Subjects) {
		return fmt.Errorf("subjects are %v, want %v (another stream or another --subject-prefix?)", have.Subjects, want.Subjects)
	}
	if have.Retention != jetstream.LimitsPolicy {
		return fmt.Errorf("retention is %s, want limits: consumers must not remove events", have.Retention)
	}
	if have.Discard != jetstream.DiscardOld {
		return errors.New("discard policy is new, want old: publishers must not be refused when the stream is full")
	}
	if have.MaxMsgsPerSubject > 0 {
		return fmt.Errorf("max messages per subject is %d, want unlimited: per-subject limits make holes no resume can detect", have.MaxMsgsPerSubject)
	}
	if have.Storage != want.Storage {
		return fmt.Errorf("storage is %s, want %s", have.Storage, want.Storage)
	}
	if have.Sealed || have.NoAck {
		return errors.New("stream is sealed or does not acknowledge publishes")
	}
	return nil
}
