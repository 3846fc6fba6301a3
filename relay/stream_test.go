package relay

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sserelay/sserelay/embedded"
)

func jsServer(t *testing.T) jetstream.JetStream {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ns, err := embedded.Start(ctx, embedded.Options{StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ns.Shutdown)
	nc, err := nats.Connect("", ns.ConnectOption())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

func TestEnsureStreamCreatesAndUpdates(t *testing.T) {
	js := jsServer(t)
	ctx := context.Background()
	first := EpochSeq(time.Now())
	info, err := EnsureStream(ctx, js, StreamOptions{MaxAge: time.Hour, FirstSeq: first})
	if err != nil {
		t.Fatal(err)
	}
	c := info.Config
	if c.Name != "SSE" || len(c.Subjects) != 1 || c.Subjects[0] != "sse.>" || !c.AllowDirect || !c.DenyDelete ||
		c.Discard != jetstream.DiscardOld || c.Retention != jetstream.LimitsPolicy || c.MaxMsgsPerSubject != -1 ||
		c.Storage != jetstream.FileStorage || c.MaxAge != time.Hour || c.Duplicates != 2*time.Minute {
		t.Fatalf("created stream config = %+v", c)
	}
	ack, err := js.Publish(ctx, "sse.app.u1", []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	if ack.Sequence != first {
		t.Fatalf("first sequence = %d, want %d", ack.Sequence, first)
	}
	// A second start with other limits updates them and keeps the events.
	info, err = EnsureStream(ctx, js, StreamOptions{MaxAge: 2 * time.Hour, MaxBytes: 1 << 20, FirstSeq: first + 1000})
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.MaxAge != 2*time.Hour || info.Config.MaxBytes != 1<<20 || info.State.LastSeq != first {
		t.Fatalf("updated stream: config %+v state %+v", info.Config, info.State)
	}
	// The duplicate window never exceeds the resume window.
	info, err = EnsureStream(ctx, js, StreamOptions{MaxAge: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Duplicates != time.Minute {
		t.Fatalf("duplicates = %s, want 1m", info.Config.Duplicates)
	}
	// An operator's raised consumer limit (README, "Relays per stream")
	// survives the next start's update of the limits.
	cfg := info.Config
	cfg.MaxConsumers = 5000
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	info, err = EnsureStream(ctx, js, StreamOptions{MaxAge: 3 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.MaxConsumers != 5000 || info.Config.MaxAge != 3*time.Hour {
		t.Fatalf("after an update by the relay: max consumers %d, max age %s; want 5000 and 3h", info.Config.MaxConsumers, info.Config.MaxAge)
	}
}

func TestEnsureStreamRefusesIncompatible(t *testing.T) {
	base := jetstream.StreamConfig{Name: "SSE", Subjects: []string{"sse.>"}, AllowDirect: true}
	tests := map[string]func(*jetstream.StreamConfig){
		"other subjects":     func(c *jetstream.StreamConfig) { c.Subjects = []string{"sse.>", "other.>"} },
		"per-subject limit":  func(c *jetstream.StreamConfig) { c.MaxMsgsPerSubject = 10 },
		"discard new":        func(c *jetstream.StreamConfig) { c.Discard = jetstream.DiscardNew; c.MaxMsgs = 100 },
		"work queue":         func(c *jetstream.StreamConfig) { c.Retention = jetstream.WorkQueuePolicy },
		"memory vs file":     func(c *jetstream.StreamConfig) { c.Storage = jetstream.MemoryStorage },
		"interest retention": func(c *jetstream.StreamConfig) { c.Retention = jetstream.InterestPolicy },
	}
	for name, edit := range tests {
		t.Run(name, func(t *testing.T) {
			js := jsServer(t)
			cfg := base
			edit(&cfg)
			if _, err := js.CreateStream(context.Background(), cfg); err != nil {
				t.Fatal(err)
			}
			_, err := EnsureStream(context.Background(), js, StreamOptions{})
			if !errors.Is(err, ErrIncompatibleStream) {
				t.Fatalf("EnsureStream = %v, want ErrIncompatibleStream", err)
			}
		})
	}
}

func TestStartRequiresDirectGet(t *testing.T) {
	js := jsServer(t)
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "SSE", Subjects: []string{"sse.>"}}); err != nil {
		t.Fatal(err)
	}
	r, err := New(Config{Conn: js.Conn(), Verifier: mustVerifier(t), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Start(ctx); err == nil {
		_ = r.Shutdown(ctx)
		t.Fatal("Start succeeded on a stream without allow_direct")
	}
	// EnsureStream turns it on, then the relay starts.
	if _, err := EnsureStream(ctx, js, StreamOptions{}); err != nil {
		t.Fatal(err)
	}
	r2, _ := New(Config{Conn: js.Conn(), Verifier: mustVerifier(t), Logger: testLogger(t)})
	if err := r2.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := r2.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestNewRequiresConnAndVerifier(t *testing.T) {
	if _, err := New(Config{}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("New(Config{}) = %v", err)
	}
	if _, err := New(Config{Verifier: mustVerifier(t)}); !errors.Is(err, ErrInvalidConfig) {
		t.Fatalf("New without conn = %v", err)
	}
}

// TestReadyzFailsWhenStreamDeleted: with its stream gone the consumer cannot
// be recreated, and readiness must stop claiming the relay works.
func TestReadyzFailsWhenStreamDeleted(t *testing.T) {
	e := newEnv(t)
	readyz := func() int {
		resp, err := http.Get(e.url + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := readyz(); code != http.StatusOK {
		t.Fatalf("/readyz at start: %d", code)
	}
	if err := e.js.DeleteStream(context.Background(), "SSE"); err != nil {
		t.Fatal(err)
	}
	if code := readyz(); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz with the stream deleted: %d, want 503", code)
	}
}

// TestEnsureStreamRace: relays that start together on a new stream each
// try to create it, with first sequences of their own clocks. The ones that
// lose the race find the winner's stream and use it, instead of exiting
// with "stream name already in use".
func TestEnsureStreamRace(t *testing.T) {
	js := jsServer(t)
	const n = 8
	errs := make(chan error, n)
	firsts := make(chan uint64, n)
	start := make(chan struct{})
	base := EpochSeq(time.Now())
	for i := range n {
		go func() {
			<-start
			info, err := EnsureStream(context.Background(), js, StreamOptions{MaxAge: time.Hour, FirstSeq: base + uint64(i)})
			if err == nil {
				firsts <- info.Config.FirstSeq
			}
			errs <- err
		}()
	}
	close(start)
	for range n {
		if err := <-errs; err != nil {
			t.Errorf("EnsureStream: %v", err)
		}
	}
	close(firsts)
	var first uint64
	for f := range firsts {
		if first != 0 && f != first {
			t.Errorf("relays see first sequences %d and %d: not one stream", first, f)
		}
		first = f
	}
}
