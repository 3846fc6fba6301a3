package relay

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	gosse "github.com/tmaxmax/go-sse"
)

// gosseEvents connects go-sse (github.com/tmaxmax/go-sse, a lenient client
// that turns every block with a field into an event, data or not) once,
// without retries, and returns what it delivered when the stream ended.
// onOpen runs when sserelay.connected arrived.
func gosseEvents(t *testing.T, e *testEnv, query, tok string, onOpen func()) []gosse.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, e.url+"/v1/events?"+query, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	conn := (&gosse.Client{Backoff: gosse.Backoff{MaxRetries: -1}}).NewConnection(req)
	var (
		mu  sync.Mutex
		got []gosse.Event
	)
	conn.SubscribeToAll(func(ev gosse.Event) {
		mu.Lock()
		got = append(got, ev)
		mu.Unlock()
		if ev.Type == EventConnected && onOpen != nil {
			go onOpen() // not on go-sse's reading goroutine
		}
	})
	if err := conn.Connect(); ctx.Err() != nil {
		t.Fatalf("go-sse: stream did not end: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	return got
}

// checkNoPhantoms fails the test for every event that is neither a
// published one (data in want, in order) nor a named sserelay.* event with
// data.
func checkNoPhantoms(t *testing.T, got []gosse.Event, want ...string) {
	t.Helper()
	var data []string
	for _, ev := range got {
		switch {
		case strings.HasPrefix(ev.Type, "sserelay.") && ev.Data != "":
		case ev.Type == "" && ev.Data != "":
			data = append(data, ev.Data)
		default:
			t.Errorf("event nobody published: %+v", ev)
		}
	}
	if strings.Join(data, ",") != strings.Join(want, ",") {
		t.Errorf("events %q, want %q", data, want)
	}
}

// TestNoPhantomEvents: the retry hints of a stream's start, of a drain and
// of load shedding reach go-sse as no event at all.
func TestNoPhantomEvents(t *testing.T) {
	t.Run("connect and drain", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t)
		got := gosseEvents(t, e, "app_id=demo", token(t, "alice"), func() {
			seq := e.publish("sse.demo.alice", "one")
			seq = max(seq, e.publish("sse.demo.alice", "two"))
			e.waitCursor(seq)
			time.Sleep(50 * time.Millisecond) // let the writer send them before the drain
			e.relay.Drain()
		})
		checkNoPhantoms(t, got, "one", "two")
		if len(got) == 0 || got[0].Type != EventConnected {
			t.Errorf("first event %+v, want %s", got, EventConnected)
		}
		// A stream asked for while draining: a hint and a close.
		checkNoPhantoms(t, gosseEvents(t, e, "app_id=demo", token(t, "alice"), nil))
	})
	t.Run("load shedding", func(t *testing.T) {
		t.Parallel()
		e := newEnv(t, withConfig(func(c *Config) { c.MaxStreams = 1 }))
		first := e.open("app_id=demo", bearer(token(t, "alice")))
		first.Connected(t)
		checkNoPhantoms(t, gosseEvents(t, e, "app_id=demo", token(t, "bob"), nil))
	})
}
