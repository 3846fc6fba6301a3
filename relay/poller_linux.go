//go:build linux

package relay

import (
	"errors"
	"log/slog"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// A poller watches the taken-over connections of a relay with one epoll
// instance and one goroutine, in place of a goroutine per connection
// blocked in a read. A stream's client sends nothing after its request, so
// the first readiness (EPOLLIN: bytes or end of file; EPOLLRDHUP, EPOLLHUP,
// EPOLLERR) means it went away or broke the protocol: the session is told
// and ends. The registration is one-shot: nothing more is wanted from that
// connection. The goroutine runs while connections are watched, and an
// eventfd in the same epoll set stops it.
//
// The connections stay in Go's own poller too (an fd may be in several
// epoll sets): their writes block and time out as usual.
type poller struct {
	log *slog.Logger

	mu     sync.Mutex
	epfd   int // -1 while no goroutine runs
	evfd   int
	nextID uint64
	conns  map[uint64]*session
	broken bool // epoll could not be set up: sessions keep a reader goroutine

	// The epoll_ctl of add and remove, under mu: ctl runs it on the fd that
	// RawConn.Control passes, with ctlOp and ctlEv, and sets ctlErr. Made
	// once: a closure per call, and the variables it captured, were 4
	// allocations per stream.
	ctl    func(fd uintptr)
	ctlOp  int
	ctlEv  unix.EpollEvent
	ctlErr error
}

func newPoller(log *slog.Logger) *poller {
	p := &poller{log: log, epfd: -1}
	p.ctl = func(fd uintptr) {
		ev := &p.ctlEv
		if p.ctlOp == unix.EPOLL_CTL_DEL {
			ev = nil
		}
		p.ctlErr = unix.EpollCtl(p.epfd, p.ctlOp, int(fd), ev)
	}
	return p
}

// control runs epoll_ctl op with ev on s's connection. Called with mu held.
func (p *poller) control(s *session, op int, ev unix.EpollEvent) error {
	p.ctlOp, p.ctlEv, p.ctlErr = op, ev, nil
	if err := s.raw.Control(p.ctl); err != nil {
		return err
	}
	return p.ctlErr
}

// stopID is the epoll key of the eventfd.
const stopID = 0

// add watches s's connection and reports whether it does; if not, the
// session must watch it itself.
func (p *poller) add(s *session) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.broken {
		return false
	}
	if p.epfd < 0 {
		if err := p.startLocked(); err != nil {
			p.broken = true
			p.log.Warn("epoll unavailable: one reader goroutine per stream", "err", err)
			return false
		}
	}
	p.nextID++
	id := p.nextID
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(uint32(id)), Pad: int32(uint32(id >> 32))}
	if err := p.control(s, unix.EPOLL_CTL_ADD, ev); err != nil {
		p.log.Debug("epoll add failed: a reader goroutine watches the stream", "err", err)
		p.stopIfEmptyLocked()
		return false
	}
	p.conns[id] = s
	s.pollID = id
	return true
}

// remove stops watching s's connection. It must run before the connection
// closes: the fd number could be reused by then.
func (p *poller) remove(s *session) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s.pollID == 0 || p.conns[s.pollID] != s {
		return
	}
	delete(p.conns, s.pollID)
	s.pollID = 0
	// Control fails once the connection is closed (Shutdown's abortAll):
	// then its fd is already out of the epoll set.
	_ = p.control(s, unix.EPOLL_CTL_DEL, unix.EpollEvent{})
	p.stopIfEmptyLocked()
}

func (p *poller) startLocked() error {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return err
	}
	evfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return err
	}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, evfd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: stopID}); err != nil {
		unix.Close(evfd)
		unix.Close(epfd)
		return err
	}
	p.epfd, p.evfd = epfd, evfd
	p.conns = make(map[uint64]*session)
	go p.run(epfd, evfd)
	return nil
}

// stopIfEmptyLocked ends the goroutine when no connection is watched; it
// closes its epoll and eventfd itself. A later add starts a new one.
func (p *poller) stopIfEmptyLocked() {
	if len(p.conns) > 0 || p.epfd < 0 {
		return
	}
	var one = [8]byte{1}
	_, _ = unix.Write(p.evfd, one[:]) // never blocks: the counter starts at 0
	p.epfd, p.evfd, p.conns = -1, -1, nil
}

func (p *poller) run(epfd, evfd int) {
	defer unix.Close(epfd)
	defer unix.Close(evfd)
	events := make([]unix.EpollEvent, 128)
	var gone []*session
	peek := newPeeker()
	for {
		n, err := unix.EpollWait(epfd, events, -1)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			p.log.Error("epoll wait failed: the streams it watched end", "err", err)
			p.failAll(epfd)
			return
		}
		stop := false
		p.mu.Lock()
		for _, ev := range events[:n] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if id == stopID {
				stop = true
				continue
			}
			if s := p.conns[id]; s != nil {
				gone = append(gone, s)
			}
		}
		p.mu.Unlock()
		for _, s := range gone {
			s.goneAway(peek.bytesWaiting(s))
		}
		clear(gone)
		gone = gone[:0]
		if stop {
			return
		}
	}
}

// failAll ends every stream watched by the epoll set epfd, which can no
// longer tell when their clients leave.
func (p *poller) failAll(epfd int) {
	p.mu.Lock()
	var all []*session
	if p.epfd == epfd {
		for _, s := range p.conns {
			all = append(all, s)
		}
		p.epfd, p.evfd, p.conns = -1, -1, nil
		p.broken = true
	}
	p.mu.Unlock()
	for _, s := range all {
		s.goneAway(false)
	}
}

// A peeker looks for bytes waiting on connections, for one goroutine: the
// function that RawConn.Control runs is made once, where a closure per
// call, the variables it captured and unix.Recvfrom's address were 3
// allocations per stream.
type peeker struct {
	n int
	b [1]byte
	f func(fd uintptr)
}

func newPeeker() *peeker {
	p := &peeker{}
	p.f = func(fd uintptr) {
		// A raw recvfrom with no address, like the writes below: with
		// MSG_DONTWAIT it never waits.
		n, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&p.b[0])), 1, unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
		if errno == 0 {
			p.n = int(n)
		}
	}
	return p
}

// bytesWaiting reports whether s's client sent bytes that wait to be read
// (rather than only closing its side): a peek, which leaves them there.
func (p *peeker) bytesWaiting(s *session) bool {
	p.n = 0
	_ = s.raw.Control(p.f)
	return p.n > 0
}

// The writes below are raw system calls: a non-blocking socket write never
// waits, so the goroutine need not tell the scheduler it enters a system
// call. With Syscall, a fan-out or keepalive burst spent its time in and out
// of syscall state: sysmon then polled every 20 µs and handed the P of a
// write that took a little longer to another thread, and the context
// switches of both were ~10% of a broadcast relay's CPU (perf, 5,000
// streams at 20 events/s). The fd is non-blocking (net's sockets all are),
// and the caller holds it open (RawConn.Control).

// rawWrite writes b to fd with one system call, without waiting: the number
// of bytes written, or -1.
func rawWrite(fd int, b []byte) int {
	if len(b) == 0 {
		return 0
	}
	n, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	if errno != 0 {
		return -1
	}
	return int(n)
}

// writev writes bufs to fd with one system call, without waiting: the
// number of bytes written, or -1. It takes at most maxIOV buffers.
func writev(fd int, bufs [][]byte) int {
	var small [8]unix.Iovec
	iov := small[:0]
	if len(bufs) > len(small) {
		iov = make([]unix.Iovec, 0, len(bufs))
	}
	for _, b := range bufs {
		if len(b) == 0 {
			continue
		}
		v := unix.Iovec{Base: &b[0]}
		v.SetLen(len(b))
		iov = append(iov, v)
	}
	if len(iov) == 0 {
		return 0
	}
	n, _, errno := syscall.RawSyscall(syscall.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
	if errno != 0 {
		return -1
	}
	return int(n)
}
