//go:build !linux

package relay

import "log/slog"

// A poller would watch taken-over connections without a goroutine each;
// only Linux has one here, elsewhere each stream keeps a reader goroutine.
type poller struct{}

func newPoller(*slog.Logger) *poller { return &poller{} }

func (p *poller) add(*session) bool { return false }
func (p *poller) remove(*session)   {}
