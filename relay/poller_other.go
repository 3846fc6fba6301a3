//go:build !linux

package relay

import (
	"log/slog"
	"syscall"
)

// A poller would watch taken-over connections without a goroutine each;
// only Linux has one here, elsewhere each stream keeps a reader goroutine.
type poller struct{}

func newPoller(*slog.Logger) *poller { return &poller{} }

func (p *poller) add(*session) bool { return false }
func (p *poller) remove(*session)   {}

// rawWrite writes b to fd without waiting: the number of bytes written, or -1.
func rawWrite(fd int, b []byte) int {
	n, err := syscall.Write(fd, b)
	if err != nil {
		return -1
	}
	return n
}

// writev is not used where nothing parks; it writes the first buffer only.
func writev(fd int, bufs [][]byte) int {
	n, err := syscall.Write(fd, bufs[0])
	if err != nil {
		return -1
	}
	return n
}
