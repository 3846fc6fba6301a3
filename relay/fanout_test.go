package relay

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// TestFanOutExactlyOnce: an event for more sessions than the dispatcher
// writes itself goes to the fan-out goroutines, which write whole queues
// with one writev when events come faster than writes. Every reader gets
// every event once and in order; a reader that does not read while they
// are published, with a small socket buffer (partial writes left to its
// goroutine; an overflow and a catch-up when the kernel's buffers fill
// first), gets them all too once it reads; the others are not held up.
func TestFanOutExactlyOnce(t *testing.T) {
	const readers, events = maxDirect + 8, 400
	e := newEnv(t, withConfig(func(c *Config) { c.QueueEvents = 64 }))
	tok := func(u string) string { return token(t, u, claimFeeds("room")) }
	var streams []*sseStream
	for i := range readers {
		s := e.open("app_id=demo&feed=room", bearer(tok("u"+strconv.Itoa(i))))
		s.Connected(t)
		streams = append(streams, s)
	}
	stalled := e.openRaw(t, "app_id=demo&feed=room", http.Header{"Authorization": {"Bearer " + tok("stalled")}}, 64<<10)
	stalled.Connected(t)

	data := strings.Repeat("x", 4000) // 1.6 MB in all: beyond the stalled socket's buffers
	seqs := publishN(t, asyncJS(t, e.pub), events, func(i int) *nats.Msg {
		return &nats.Msg{Subject: "sse.demo.room", Data: []byte(strconv.Itoa(i) + data)}
	})
	done := make(chan struct{})
	for _, s := range streams {
		go func() {
			defer func() { done <- struct{}{} }()
			for i, want := range seqs {
				ev, err := s.Next(20 * time.Second)
				if err != nil {
					t.Errorf("event %d: %v", i, err)
					return
				}
				if ev.ID != strconv.FormatUint(want, 10) || !strings.HasPrefix(ev.Data, strconv.Itoa(i)+"x") {
					t.Errorf("event %d: id %s, want %d", i, ev.ID, want)
					return
				}
			}
		}()
	}
	for range streams {
		<-done
	}
	// The stalled reader now reads: a reset is not allowed (the store has
	// every event), a gap or a repeat neither.
	for i, want := range seqs {
		ev := stalled.MustNext(t)
		if ev.ID != strconv.FormatUint(want, 10) {
			t.Fatalf("stalled reader, event %d: %+v, want id %d", i, ev, want)
		}
	}
}

// TestWriteFramesRawManyFrames: a queue longer than writev takes (IOV_MAX,
// 1024 buffers) is written up to that many frames at once, the rest left
// as the partial write for the session's goroutine; every byte once, in
// order. Before, the call failed (EINVAL) and left the whole queue.
func TestWriteFramesRawManyFrames(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("writev with IOV_MAX: Linux")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()

	r := &Relay{metrics: newMetrics(), keepalives: newKeepalives(time.Minute)}
	s := &session{r: r}
	s.raw, _ = server.(*net.TCPConn).SyscallConn()
	var frames []*frame
	var want bytes.Buffer
	for i := range maxIOV + 476 {
		f := &frame{seq: uint64(i + 1), buf: fmt.Appendf(nil, "%09d\n", i)} // 10 bytes: all fit in the socket
		frames = append(frames, f)
		want.Write(f.buf)
	}
	s.writeFramesRaw(frames)
	if got, rest := len(s.partial), 476*10; got != rest {
		t.Fatalf("partial write of %d bytes, want %d (the frames after the first %d)", got, rest, maxIOV)
	}
	if s.lastSent != uint64(len(frames)) {
		t.Fatalf("lastSent %d, want %d", s.lastSent, len(frames))
	}
	if _, err := server.Write(s.partial); err != nil { // what the session's goroutine does
		t.Fatal(err)
	}
	got := make([]byte, want.Len())
	_ = client.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(client, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatal("the bytes arrived out of order or changed")
	}
}
