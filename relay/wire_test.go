package relay

// The wire format: headers, exact bytes, keepalives, net/http streams, unsafe event names.

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestEventsStreamHeadersAndConnected(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := e.open("app_id=demo", bearer(token(t, "alice")))
	h := s.Resp.Header
	for name, want := range map[string]string{
		"Content-Type":      "text/event-stream",
		"Cache-Control":     "no-cache",
		"X-Accel-Buffering": "no",
	} {
		if got := h.Values(name); len(got) != 1 || got[0] != want {
			t.Errorf("%s = %q, want exactly %q", name, got, want)
		}
	}
	hello := s.Hello(t)
	if hello.User != "alice" || hello.AppID != "demo" || hello.ConnectionID == "" {
		t.Fatalf("connected %+v", hello)
	}
	if got := h.Get("X-Connection-Id"); got != hello.ConnectionID {
		t.Fatalf("X-Connection-Id %q, connected event says %q", got, hello.ConnectionID)
	}
}

// TestEventsWireBytes reads the raw response: a retry line, the connected
// event with id C, and a live event whose CR, LF and CRLF line ends become
// separate data lines ending in LF.
func TestEventsWireBytes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	s := e.open("app_id=demo", bearer(token(t, "alice")))
	cid := s.Resp.Header.Get("X-Connection-Id")
	want := "retry: 2000\n" +
		"id: 0\nevent: sserelay.connected\ndata: {\"app_id\":\"demo\",\"connection_id\":\"" + cid + "\",\"user\":\"alice\"}\n\n"
	if got := s.ReadN(t, len(want)); got != want {
		t.Fatalf("stream starts with\n%q\nwant\n%q", got, want)
	}
	seq := e.publish("sse.demo.alice.orders", "a\rb\nc\r\nd\r\n\re\n", HeaderEvent, "order.created")
	want = "id: " + strconv.FormatUint(seq, 10) + "\nevent: order.created\n" +
		"data: a\ndata: b\ndata: c\ndata: d\ndata:\ndata: e\ndata:\n\n"
	if got := s.ReadN(t, len(want)); got != want {
		t.Fatalf("live event\n%q\nwant\n%q", got, want)
	}
	// No Sse-Event header: no event line, so EventSource.onmessage gets it.
	seq = e.publish("sse.demo.alice", `{"x":1}`)
	want = "id: " + strconv.FormatUint(seq, 10) + "\ndata: {\"x\":1}\n\n"
	if got := s.ReadN(t, len(want)); got != want {
		t.Fatalf("unnamed event\n%q\nwant\n%q", got, want)
	}
}

// TestEventsNetHTTPPath runs a stream through net/http (NoHijack, as for
// HTTP/2) rather than on a taken-over connection: same headers, events,
// keepalives, drain and release.
func TestEventsNetHTTPPath(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *Config) { c.NoHijack = true; c.Keepalive = 50 * time.Millisecond }))
	tok := token(t, "alice")
	s := e.open("app_id=demo", bearer(tok))
	if !slices.Contains(s.Resp.TransferEncoding, "chunked") {
		t.Fatalf("NoHijack stream is not chunked (transfer encoding %v): not served by net/http", s.Resp.TransferEncoding)
	}
	for name, want := range map[string]string{"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"} {
		if got := s.Resp.Header.Values(name); len(got) != 1 || got[0] != want {
			t.Errorf("%s = %q, want exactly %q", name, got, want)
		}
	}
	hello := s.Hello(t)
	if hello.User != "alice" || hello.ConnectionID != s.Resp.Header.Get("X-Connection-Id") {
		t.Fatalf("connected %+v, X-Connection-Id %q", hello, s.Resp.Header.Get("X-Connection-Id"))
	}
	s.LinesUntil(t, ": keepalive")
	seq := e.publish("sse.demo.alice", "a\r\nb", HeaderEvent, "x")
	s.ExpectNext(t, seq, "x", "a\nb")

	gone := e.open("app_id=demo", bearer(tok))
	gone.Connected(t)
	e.waitOpen(2)
	gone.Close()
	e.waitOpen(1)

	e.relay.Drain()
	rest := s.ReadRest(t)
	// Keepalives may come before the final retry hint.
	for strings.HasPrefix(rest, ": keepalive\n") {
		rest = strings.TrimPrefix(rest, ": keepalive\n")
	}
	wantRetryOnly(t, rest, "")
	e.waitOpen(0)
}

func TestEventsKeepalive(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *Config) { c.Keepalive = 50 * time.Millisecond }))
	s := e.open("app_id=demo", bearer(token(t, "alice")))
	s.Connected(t)
	before := s.LinesUntil(t, ": keepalive")
	for _, l := range before {
		if l != "" {
			t.Fatalf("idle stream sent %q before the keepalive", l)
		}
	}
	// Keepalives go on while the stream stays idle, and events still flow.
	s.LinesUntil(t, ": keepalive")
	seq := e.publish("sse.demo.alice", "after")
	s.ExpectNext(t, seq, "", "after")
}

// TestEventsBadEventNameDropped: an event whose Sse-Event header cannot be
// written safely is dropped (live and on replay), counted, and the cursor
// moves past it.
func TestEventsBadEventNameDropped(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	tok := token(t, "alice")
	s := e.open("app_id=demo", bearer(tok))
	s.Connected(t)
	bad := []uint64{
		e.rawHPub("sse.demo.alice", "Sse-Event: a\rb\r\n", "CR inside"),
		e.rawHPub("sse.demo.alice", "Sse-Event: trailing\r\r\n", "CR at the end"),
		e.publish("sse.demo.alice", "NUL", HeaderEvent, "a\x00b"),
		e.publish("sse.demo.alice", "reserved", HeaderEvent, "sserelay.x"),
		e.publish("sse.demo.alice", "forged connected", HeaderEvent, EventConnected),
	}
	// A long name is writable: NATS publishers are not held to the HTTP rule.
	long := e.publish("sse.demo.alice", "long", HeaderEvent, strings.Repeat("e", 129))
	s.ExpectNext(t, long, strings.Repeat("e", 129), "long")
	good := e.publish("sse.demo.alice", "fine", HeaderEvent, "ok")
	e.waitCursor(good)
	s.ExpectNext(t, good, "ok", "fine")
	if got := e.metric("sserelay_events_dropped_total"); got != float64(len(bad)) {
		t.Fatalf("sserelay_events_dropped_total %v, want %d", got, len(bad))
	}
	if got := e.metric("sserelay_cursor"); got != float64(good) {
		t.Fatalf("sserelay_cursor %v, want %d", got, good)
	}
	// A resume from before them reads the store and drops them as well.
	r := e.open("app_id=demo", http.Header{"Authorization": {"Bearer " + tok}, "Last-Event-Id": {strconv.FormatUint(bad[0]-1, 10)}})
	r.Connected(t)
	r.ExpectNext(t, long, strings.Repeat("e", 129), "long")
	r.ExpectNext(t, good, "ok", "fine")
	p := e.getEvents(t, "app_id=demo&poll=1&last_event_id=0", bearer(tok))
	wantJSON(t, p, `{"events":[{"id":"`+strconv.FormatUint(long, 10)+`","event":"`+strings.Repeat("e", 129)+`","data":"long"},{"id":"`+strconv.FormatUint(good, 10)+`","event":"ok","data":"fine"}],"last_event_id":"`+strconv.FormatUint(good, 10)+`"}`)
}

// TestEventsUndecodableHeaderDropped: a raw NATS message whose header block
// nats.go cannot decode (here: a bare LF inside Sse-Event, and a line
// without a colon after an X-Connection-Id) has no trustworthy name nor
// exclusion. One rule on every path, so that a resume is exact: it is
// dropped live (counted once, logged), on a resume from the store and from
// the ring, and by poll=1, and the cursor moves past it.
func TestEventsUndecodableHeaderDropped(t *testing.T) {
	t.Parallel()
	for _, ring := range []int{0, -1} { // the ring on (default), off: resumes read the store
		t.Run("ring="+strconv.Itoa(ring), func(t *testing.T) {
			t.Parallel()
			e := newEnv(t, withConfig(func(c *Config) { c.RingEvents = ring }))
			tok := token(t, "alice")
			s := e.open("app_id=demo&connection_id=alice-tab-0001", bearer(tok))
			s.Connected(t)
			first := e.publish("sse.demo.alice", "first")
			bad := []uint64{
				e.rawHPub("sse.demo.alice", "Sse-Event: a\nb\r\n", "LF"),
				e.rawHPub("sse.demo.alice", "X-Connection-Id: alice-tab-0001\r\nX-Connection-User: alice\r\nno colon here\r\n", "own, broken"),
			}
			good := e.publish("sse.demo.alice", "fine", HeaderEvent, "ok")
			e.waitCursor(good)
			s.ExpectNext(t, first, "", "first")
			s.ExpectNext(t, good, "ok", "fine") // nothing of bad in between
			if got := e.metric("sserelay_events_dropped_total"); got != float64(len(bad)) {
				t.Errorf("sserelay_events_dropped_total %v, want %d", got, len(bad))
			}
			for _, last := range []uint64{0, first} {
				r := e.open("app_id=demo&connection_id=alice-tab-0001&last_event_id="+strconv.FormatUint(last, 10), bearer(tok))
				r.Connected(t)
				if last == 0 {
					r.ExpectNext(t, first, "", "first")
				}
				r.ExpectNext(t, good, "ok", "fine")
				r.Close()
			}
			p := e.getEvents(t, "app_id=demo&poll=1&last_event_id="+strconv.FormatUint(first, 10), bearer(tok))
			wantJSON(t, p, `{"events":[{"id":"`+strconv.FormatUint(good, 10)+`","event":"ok","data":"fine"}],"last_event_id":"`+strconv.FormatUint(good, 10)+`"}`)
			// A poll that ends on a dropped event moves past it too.
			p = e.getEvents(t, "app_id=demo&poll=1&last_event_id="+strconv.FormatUint(bad[0], 10), bearer(tok))
			wantJSON(t, p, `{"events":[{"id":"`+strconv.FormatUint(good, 10)+`","event":"ok","data":"fine"}],"last_event_id":"`+strconv.FormatUint(good, 10)+`"}`)
		})
	}
}
