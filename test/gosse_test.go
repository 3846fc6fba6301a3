package e2e_test

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/sserelay/sserelay/test/testkit"
	gosse "github.com/tmaxmax/go-sse"
)

// TestGoSSEKill9: github.com/tmaxmax/go-sse, a lenient client we did not
// write, reads a stream across a SIGKILL of the relay and its restart on
// the same port and data dir. It must see every published event exactly
// once, in order, with its stream sequence as id, and nothing else but
// named sserelay.* events: go-sse hands the application a block without
// data as an event with empty data, so a retry hint in a block of its own
// would show up here as a phantom event.
func TestGoSSEKill9(t *testing.T) {
	t.Parallel()
	const secret = "gosse-secret"
	listen := fmt.Sprintf("127.0.0.1:%d", testkit.FreePort(t))
	dataDir := t.TempDir()
	opts := relayOpts{Secret: secret, Listen: listen, DataDir: dataDir, Args: []string{"--retry", "100ms"}}
	r := startRelay(t, opts)
	r.freshStream(t)
	tok := token(t, secret, "alice", "--app", "app")

	var (
		mu  sync.Mutex
		got []gosse.Event
	)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.URL+"/v1/events?app_id=app", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	sc := &gosse.Client{
		HTTPClient: httpClient,
		Backoff:    gosse.Backoff{InitialInterval: 50 * time.Millisecond, Multiplier: 1.5, Jitter: 0.5, MaxInterval: 500 * time.Millisecond},
	}
	conn := sc.NewConnection(req)
	conn.SubscribeToAll(func(ev gosse.Event) {
		mu.Lock()
		got = append(got, ev)
		mu.Unlock()
	})
	done := make(chan error, 1)
	go func() { done <- conn.Connect() }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(waitShort):
			t.Error("go-sse did not stop")
		}
	})
	events := func() []gosse.Event { mu.Lock(); defer mu.Unlock(); return append([]gosse.Event(nil), got...) }
	connected := func() int {
		n := 0
		for _, ev := range events() {
			if ev.Type == "sserelay.connected" {
				n++
			}
		}
		return n
	}
	eventually(t, waitLong, "go-sse connected", func() bool { return connected() >= 1 })

	want := map[uint64]string{} // seq → data of every acknowledged event
	var order []uint64
	var js jetstream.JetStream
	connectNATS := func(url string) {
		nc, err := nats.Connect(url, nats.MaxReconnects(0))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(nc.Close)
		js, _ = jetstream.New(nc)
	}
	publish := func(n int) {
		for i := 0; i < n; i++ {
			data := "n=" + strconv.Itoa(len(order))
			pctx, pcancel := context.WithTimeout(context.Background(), waitShort)
			ack, err := js.Publish(pctx, "sse.app.alice", []byte(data))
			pcancel()
			if err != nil {
				t.Fatalf("publish %s: %v", data, err)
			}
			want[ack.Sequence] = data
			order = append(order, ack.Sequence)
		}
	}
	received := func(seq uint64) bool {
		id := strconv.FormatUint(seq, 10)
		for _, ev := range events() {
			if ev.LastEventID == id && ev.Type == "" {
				return true
			}
		}
		return false
	}

	connectNATS(r.NATS)
	publish(20)
	eventually(t, waitLong, "the first 20 events", func() bool { return received(order[len(order)-1]) })
	publish(30) // the kill comes while these may still be on their way
	r.kill()

	r2 := startRelay(t, opts)
	connectNATS(r2.NATS)
	publish(30)
	eventually(t, waitLong, "the events after the restart", func() bool { return received(order[len(order)-1]) })
	if n := connected(); n < 2 {
		t.Errorf("%d streams opened, want a reconnect after the kill", n)
	}

	var seqs []uint64
	for _, ev := range events() {
		if strings.HasPrefix(ev.Type, "sserelay.") {
			if ev.Data == "" {
				t.Errorf("relay event %q without data", ev.Type)
			}
			continue
		}
		seq, err := strconv.ParseUint(ev.LastEventID, 10, 64)
		data, ok := want[seq]
		if err != nil || ev.Type != "" || !ok || ev.Data != data {
			t.Errorf("event nobody published: type %q, id %q, data %q", ev.Type, ev.LastEventID, ev.Data)
			continue
		}
		seqs = append(seqs, seq)
	}
	if fmtSeqs(seqs) != fmtSeqs(order) {
		t.Errorf("go-sse got the events\n%s\nwant each published one once, in order:\n%s", fmtSeqs(seqs), fmtSeqs(order))
	}
}
