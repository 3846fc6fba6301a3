package relay

import "sync/atomic"

// metrics are the relay's counters, exposed in the Prometheus text format.
// A handful of atomics needs no client library.
type metrics struct {
	delivered    atomic.Uint64 // events written to clients (live and replayed)
	dispatched   atomic.Uint64 // events read from the stream by the dispatcher
	dropped      atomic.Uint64 // events that cannot be written safely
	replays      atomic.Uint64
	replayed     atomic.Uint64
	storeReplays atomic.Uint64 // resumes that had to read the store
	overflows    atomic.Uint64
	rejected     atomic.Uint64 // streams refused with 4xx
	shed         atomic.Uint64 // streams sent away by --max-streams
	resetGone    atomic.Uint64
	resetUnkn    atomic.Uint64
	published    atomic.Uint64
	pubErrors    atomic.Uint64
	// consumerReplaced counts replacements of the stream consumer.
	consumerReplaced atomic.Uint64
}

func newMetrics() *metrics { return &metrics{} }

func (m *metrics) resets(reason string) *atomic.Uint64 {
	if reason == ResetUnknownID {
		return &m.resetUnkn
	}
	return &m.resetGone
}
