package relay

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestKeepaliveWithinInterval: no stream stays silent longer than
// Keepalive, counted from the last byte written: the response head and
// each event count as bytes, and the next keepalive comes at most one
// interval after them (a tick that merely skips when something was written
// lets the silence grow to two intervals).
//
// Measured on a raw socket as the gaps between arrivals, with a margin of
// most of an interval for a slow machine: the gap after the head is at
// least 2 s with a skipping tick, and about 1 s with a correct one.
func TestKeepaliveWithinInterval(t *testing.T) {
	const keepalive = time.Second
	const limit = keepalive * 18 / 10
	for _, tc := range []struct {
		name     string
		noHijack bool
	}{{"taken-over connection", false}, {"inside net/http", true}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, withConfig(func(c *Config) { c.Keepalive = keepalive; c.NoHijack = tc.noHijack }))
			a := openArrivals(t, e, "app_id=demo", token(t, "alice"), "")
			a.waitFor(t, "sserelay.connected", 1)
			a.waitFor(t, ": keepalive", 2)
			e.publish("sse.demo.alice", "an event")
			a.waitFor(t, "data: an event", 1)
			a.waitFor(t, ": keepalive", 3)
			for i, gap := range a.gaps() {
				if gap > limit {
					t.Errorf("silent for %s before arrival %d (keepalive %s)", gap.Round(time.Millisecond), i+1, keepalive)
				}
			}
			if t.Failed() {
				t.Logf("arrivals:\n%s", a.String())
			}
		})
	}
}

// TestKeepaliveWhileWaitingForReplay: a resume that waits for a replay slot
// (all MaxReplays taken, here by a client that stopped reading in the
// middle of its replay) still gets its keepalives.
func TestKeepaliveWhileWaitingForReplay(t *testing.T) {
	const keepalive = time.Second
	e := newEnv(t, withConfig(func(c *Config) {
		c.Keepalive = keepalive
		c.MaxReplays = 1
		c.WriteTimeout = time.Hour // the stalled replay holds its slot
		c.RingEvents = -1
	}))
	base := e.relay.Cursor()
	big := strings.Repeat("x", 64<<10)

	for range 100 { // 6.4 MB: far beyond what the socket buffers hold
		e.publish("sse.demo.alice", big)
	}
	bobs := e.publish("sse.demo.bob", "for bob")
	e.waitCursor(bobs)
	stalled := e.openRaw(t, "app_id=demo", http.Header{"Authorization": {"Bearer " + token(t, "alice")}, "Last-Event-Id": {strconv.FormatUint(base, 10)}}, smallRcvBuf)
	defer stalled.Close() // ends the blocked replay
	if _, err := stalled.ReadUntil(10*time.Second, func(ev sseEvent) bool { return ev.ID != "" }); err != nil {
		t.Fatal(err)
	}
	eventually(t, waitLong, "the stalled resume to hold a replay slot", func() bool { return len(e.relay.replaySlots) >= 1 })
	a := openArrivals(t, e, "app_id=demo", token(t, "bob"), "Last-Event-ID: "+strconv.FormatUint(base, 10)+"\r\n")
	a.waitFor(t, ": keepalive", 2)
	if strings.Contains(a.String(), "for bob") {
		t.Fatal("bob's replay ran: the test did not make it wait for a slot")
	}
	for i, gap := range a.gaps() {
		if gap > keepalive*18/10 {
			t.Errorf("silent for %s before arrival %d (keepalive %s)", gap.Round(time.Millisecond), i+1, keepalive)
		}
	}
	if t.Failed() {
		t.Logf("arrivals:\n%s", a.String())
	}
}

// arrivals reads a stream on a raw socket and records when each chunk of
// bytes arrived.
type arrivals struct {
	conn net.Conn
	done chan struct{}

	mu     sync.Mutex
	times  []time.Time
	chunks []string
	all    bytes.Buffer
}

// openArrivals opens a stream; hdr holds more header lines, each ending in CRLF.
func openArrivals(t *testing.T, e *testEnv, query, tok, hdr string) *arrivals {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	a := &arrivals{conn: conn, done: make(chan struct{})}
	t.Cleanup(func() { conn.Close(); <-a.done })
	req := "GET /v1/events?" + query + " HTTP/1.1\r\nHost: relay\r\nAccept: text/event-stream\r\nAuthorization: Bearer " + tok + "\r\n" + hdr + "\r\n"
	if _, err := conn.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(a.done)
		buf := make([]byte, 64<<10)
		for {
			n, err := conn.Read(buf)
			if n > 0 {
				a.mu.Lock()
				a.times = append(a.times, time.Now())
				a.chunks = append(a.chunks, string(buf[:n]))
				a.all.Write(buf[:n])
				a.mu.Unlock()
			}
			if err != nil {
				return
			}
		}
	}()
	return a
}

// waitFor waits until s occurs n times in the bytes read.
func (a *arrivals) waitFor(t *testing.T, s string, n int) {
	t.Helper()
	eventually(t, waitLong, fmt.Sprintf("%d× %q", n, s), func() bool {
		a.mu.Lock()
		got := strings.Count(a.all.String(), s)
		a.mu.Unlock()
		if got >= n {
			return true
		}
		select {
		case <-a.done:
			t.Fatalf("stream ended before %d× %q:\n%s", n, s, a.String())
		default:
		}
		return false
	})
}

// gaps returns the time between consecutive arrivals, from the first one
// (the response head).
func (a *arrivals) gaps() []time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []time.Duration
	for i := 1; i < len(a.times); i++ {
		out = append(out, a.times[i].Sub(a.times[i-1]))
	}
	return out
}

func (a *arrivals) String() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var b strings.Builder
	for i, c := range a.chunks {
		at := time.Duration(0)
		if i > 0 {
			at = a.times[i].Sub(a.times[0])
		}
		b.WriteString("  +" + at.Round(time.Millisecond).String() + " " + strings.ReplaceAll(strings.ReplaceAll(c, "\r", `\r`), "\n", `\n`) + "\n")
	}
	return b.String()
}

// TestKeepaliveSlots: the keepalives find exactly the silent streams among
// many, reuse the slots of streams that ended, and let go of their chunks
// and goroutine with the last stream.
func TestKeepaliveSlots(t *testing.T) {
	k := newKeepalives(time.Hour) // nothing falls silent on its own during the test
	var all []*session
	for range 2*kaChunkLen + 10 {
		s := &session{}
		k.add(s)
		all = append(all, s)
	}
	chunks := len(k.chunks)
	silentSet := map[*session]bool{}
	for i, s := range all {
		if i%97 == 0 {
			s.lastWrite.Store(k.now() - k.silence - 1)
			silentSet[s] = true
		}
	}
	due := k.collect(nil)
	if len(due) != len(silentSet) {
		t.Fatalf("collect found %d silent streams, want %d", len(due), len(silentSet))
	}
	for _, s := range due {
		if !silentSet[s] || !k.silent(s) {
			t.Fatalf("collect found a stream that is not silent (slot %d)", s.kaSlot)
		}
	}
	for _, s := range all[:kaChunkLen] {
		k.remove(s)
		if s.lastWrite != nil || k.silent(s) {
			t.Fatal("a removed stream is still watched")
		}
	}
	for i := range kaChunkLen {
		s := &session{}
		k.add(s)
		all[i] = s
	}
	if len(k.chunks) != chunks {
		t.Errorf("%d chunks after reusing freed slots, want %d", len(k.chunks), chunks)
	}
	due = k.collect(nil)
	if want := len(silentSet) - (kaChunkLen+96)/97; len(due) != want { // the silent ones among the removed are gone
		t.Errorf("collect found %d silent streams after the removals, want %d", len(due), want)
	}
	for _, s := range all {
		k.remove(s)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.stop != nil || k.chunks != nil || k.n != 0 {
		t.Errorf("after the last stream: stop %v, %d chunks, %d slots taken", k.stop != nil, len(k.chunks), k.n)
	}
}
