package relay

import (
	"net/http"
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
