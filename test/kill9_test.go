package e2e_test

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestKill9: SIGKILL the relay (embedded NATS) while a publisher is
// publishing through JetStream. After a restart on the same data dir every
// acknowledged event can be replayed, in order, and the sequence goes on.
func TestKill9(t *testing.T) {
	t.Parallel()
	const secret = "kill9-secret"
	dataDir := t.TempDir()
	r := startRelay(t, relayOpts{Secret: secret, DataDir: dataDir})
	base := r.freshStream(t)

	nc, err := nats.Connect(r.NATS, nats.MaxReconnects(0))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu       sync.Mutex
		acked    = map[uint64]string{} // seq → data
		order    []uint64
		failures int
		stop     atomic.Bool
		done     = make(chan struct{})
	)
	go func() {
		defer close(done)
		for i := 0; !stop.Load(); i++ {
			data := "n=" + strconv.Itoa(i)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			ack, err := js.Publish(ctx, "sse.app.alice", []byte(data))
			cancel()
			mu.Lock()
			if err == nil {
				acked[ack.Sequence] = data
				order = append(order, ack.Sequence)
			} else {
				failures++
			}
			mu.Unlock()
			if err != nil {
				time.Sleep(5 * time.Millisecond)
			}
		}
	}()
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(order) }
	eventually(t, waitLong, "500 acknowledged publishes", func() bool { return count() >= 500 })
	r.kill() // SIGKILL while publishing
	atKill := count()
	stop.Store(true)
	select {
	case <-done:
	case <-time.After(waitLong):
		t.Fatal("publisher did not stop")
	}
	mu.Lock()
	t.Logf("acknowledged %d publishes (%d at the kill), %d failed", len(order), atKill, failures)
	for i := 1; i < len(order); i++ {
		if order[i] != order[i-1]+1 {
			t.Errorf("acks not consecutive: %d after %d", order[i], order[i-1])
		}
	}
	maxAcked := order[len(order)-1]
	mu.Unlock()

	r2 := startRelay(t, relayOpts{Secret: secret, DataDir: dataDir})
	last := r2.lastSeqAtStart(t)
	if last < maxAcked {
		t.Fatalf("after kill -9 the stream ends at %d, but %d was acknowledged", last, maxAcked)
	}
	alice := token(t, secret, "alice", "--app", "app")
	s := openStream(t, r2.URL+"/v1/events?app_id=app", map[string]string{"Authorization": "Bearer " + alice, "Last-Event-ID": strconv.FormatUint(base, 10)})
	s.waitID(t, last)
	next := publishCLI(t, r2.NATS, "", "--app", "app", "--feed", "alice", "after restart")
	if next != last+1 {
		t.Errorf("first publish after restart: seq %d, want %d", next, last+1)
	}
	s.waitID(t, next)

	got := dataEvents(s.events())
	if len(got) == 0 {
		t.Fatal("no events replayed")
	}
	seen := map[uint64]string{}
	for i, e := range got {
		seq, _ := strconv.ParseUint(e.ID, 10, 64)
		if i > 0 && seq != ids(got[i-1 : i])[0]+1 {
			t.Errorf("replay not consecutive: %d after %s", seq, got[i-1].ID)
		}
		if _, dup := seen[seq]; dup {
			t.Errorf("event %d twice", seq)
		}
		seen[seq] = e.Data
	}
	if first := ids(got[:1])[0]; first != base+1 {
		t.Errorf("replay from %d starts at %d", base, first)
	}
	mu.Lock()
	defer mu.Unlock()
	missing := 0
	for seq, data := range acked {
		if d, ok := seen[seq]; !ok || d != data {
			missing++
			if missing <= 5 {
				t.Errorf("acknowledged event %d (%q) replayed as %q (present: %v)", seq, data, d, ok)
			}
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d acknowledged events lost", missing, len(acked))
	}
	if seen[next] != "after restart" {
		t.Errorf("new event %d: %q", next, seen[next])
	}
}
