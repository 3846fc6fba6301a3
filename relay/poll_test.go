package relay

// The polling fallback, poll=1.

import (
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"testing"
)

func TestEventsPoll(t *testing.T) {
	t.Parallel()
	e := newEnv(t, withConfig(func(c *Config) { c.PollPage = 2 }))
	hdr := bearer(token(t, "alice"))

	// No id: nothing, and the cursor to poll from next.
	p := e.poll(t, "app_id=demo&poll=1", hdr)
	if len(p.Events) != 0 || p.LastEventID != "0" {
		t.Fatalf("first poll %+v", p)
	}
	var mine []uint64
	mine = append(mine, e.publish("sse.demo.alice", "one", HeaderEvent, "n"))
	e.publish("sse.demo.bob", "bob's")
	mine = append(mine, e.publish("sse.demo.alice.t", "two\nlines"))
	mine = append(mine, e.publish("sse.demo.alice", `{"three":3}`, HeaderEvent, "n"))
	e.publish("sse.demo.bob", "bob's")
	last := e.publish("sse.demo.alice", "four")
	mine = append(mine, last)
	e.publish("sse.demo.bob", "bob's last")
	cursor := last + 1
	e.waitCursor(cursor)

	// Exact JSON of one page.
	r := e.getEvents(t, "app_id=demo&poll=1&last_event_id=0", hdr)
	wantJSON(t, r, fmt.Sprintf(`{"events":[{"id":"%d","event":"n","data":"one"},{"id":"%d","data":"two\nlines"}],"last_event_id":"%d"}`, mine[0], mine[1], mine[1]))
	if cc := r.Header.Get("Cache-Control"); cc != "no-store" {
		t.Fatalf("poll Cache-Control %q", cc)
	}

	// Paging from there to the end.
	var got []string
	from := "0"
	for range 10 {
		p := e.poll(t, "app_id=demo&poll=1&last_event_id="+from, hdr)
		if len(p.Events) > 2 {
			t.Fatalf("page of %d events with PollPage 2", len(p.Events))
		}
		for _, ev := range p.Events {
			got = append(got, ev.ID+"/"+ev.Event+"/"+ev.Data)
		}
		if p.LastEventID == from {
			t.Fatalf("poll from %s did not move", from)
		}
		from = p.LastEventID
		if len(p.Events) < 2 {
			break
		}
	}
	want := []string{
		fmt.Sprintf("%d/n/one", mine[0]), fmt.Sprintf("%d//two\nlines", mine[1]),
		fmt.Sprintf("%d/n/{\"three\":3}", mine[2]), fmt.Sprintf("%d//four", mine[3]),
	}
	if !slices.Equal(got, want) {
		t.Fatalf("paged events\n got %q\nwant %q", got, want)
	}
	if from != strconv.FormatUint(cursor, 10) {
		t.Fatalf("last page's last_event_id %s, want the cursor %d", from, cursor)
	}
	// Polling at the cursor: nothing new, same cursor.
	p = e.poll(t, "app_id=demo&poll=1&last_event_id="+from, hdr)
	if len(p.Events) != 0 || p.LastEventID != from {
		t.Fatalf("poll at the cursor %+v", p)
	}
	// The Last-Event-ID header works as well, and topics narrow a poll.
	p = e.poll(t, "app_id=demo&poll=1&topic=t", http.Header{"Authorization": hdr["Authorization"], "Last-Event-Id": {"0"}})
	if len(p.Events) != 1 || p.Events[0].ID != strconv.FormatUint(mine[1], 10) || p.LastEventID != strconv.FormatUint(cursor, 10) {
		t.Fatalf("topic poll %+v", p)
	}
	// An id the stream never had.
	p = e.poll(t, "app_id=demo&poll=1&last_event_id=1000", hdr)
	if len(p.Events) != 0 || p.Reset != ResetUnknownID {
		t.Fatalf("poll from an unknown id %+v", p)
	}
	// Bad input gets the same errors as a stream.
	wantError(t, e.getEvents(t, "app_id=demo&poll=1&last_event_id=x", hdr), http.StatusBadRequest, "last event id must be a decimal stream sequence")
	wantError(t, e.getEvents(t, "app_id=demo&poll=1", nil), http.StatusUnauthorized,
		"missing token: send Authorization: Bearer, the access_token parameter or the sserelay_token cookie")
	if n := e.relay.OpenStreams(); n != 0 {
		t.Fatalf("polls left %d open streams", n)
	}
}
