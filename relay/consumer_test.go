package relay

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// clusterEnv is a relay on a three-node cluster with an R3 stream.
type clusterEnv struct {
	*testEnv
	cluster *testCluster
}

func newClusterEnv(t *testing.T) *clusterEnv {
	t.Helper()
	c := newTestCluster(t, 3)
	// The relay starts on the first node and may move to any.
	e := newR3Env(t, c, c.servers[0].ClientURL()+","+c.urls())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	e.startRelay(ctx, Config{Verifier: mustVerifier(t), Logger: testLogger(t), Keepalive: time.Hour})
	return &clusterEnv{testEnv: e, cluster: c}
}

// newR3Env returns an environment on cluster c with the stream at three
// replicas, whose relay (not started yet) connects to relayURLs.
func newR3Env(t *testing.T, c *testCluster, relayURLs string) *testEnv {
	t.Helper()
	e := &testEnv{t: t, stream: StreamOptions{Replicas: 3}}
	e.nc = c.connect(relayURLs)
	e.pub = c.connect(c.urls())
	e.js, _ = jetstream.New(e.pub)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	eventually(t, 20*time.Second, "the R3 stream", func() bool {
		_, err := EnsureStream(ctx, e.js, e.stream)
		return err == nil
	})
	return e
}

// consumerNode returns the name of the server that holds the relay's consumer.
func (e *clusterEnv) consumerNode() string {
	e.t.Helper()
	var node string
	eventually(e.t, 20*time.Second, "the relay's consumer to have a leader", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s, err := e.js.Stream(ctx, "SSE")
		if err != nil {
			return false
		}
		for info := range s.ListConsumers(ctx).Info() {
			if info.Cluster != nil && info.Cluster.Leader != "" && !strings.HasPrefix(info.Name, replayConsumerPrefix) {
				node = info.Cluster.Leader
				return true
			}
		}
		return false
	})
	return node
}

// publisher publishes to subject until stopped, retrying each event until
// it is acknowledged, and records the acknowledged sequences.
type publisher struct {
	mu    sync.Mutex
	acked []uint64
	stop  chan struct{}
	done  chan struct{}
}

func startPublisher(t testing.TB, js jetstream.JetStream, subject string) *publisher {
	p := &publisher{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for i := 0; ; i++ {
			select {
			case <-p.stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			for {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				// The same id on a retry: JetStream stores a retried event once.
				ack, err := js.Publish(ctx, subject, []byte(strconv.Itoa(i)), jetstream.WithMsgID("e"+strconv.Itoa(i)))
				cancel()
				if err == nil {
					p.mu.Lock()
					p.acked = append(p.acked, ack.Sequence)
					p.mu.Unlock()
					break
				}
				select {
				case <-p.stop:
					return
				case <-time.After(50 * time.Millisecond):
				}
			}
		}
	}()
	t.Cleanup(p.halt)
	return p
}

func (p *publisher) halt() {
	select {
	case <-p.stop:
	default:
		close(p.stop)
	}
	<-p.done
}

func (p *publisher) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.acked)
}

// TestConsumerReplacedWhenItsNodeGoes stops the server that holds the
// relay's consumer while events are published: the relay must notice the
// missing heartbeats, replace the consumer on a live node, and deliver every
// acknowledged event exactly once, in order.
func TestConsumerReplacedWhenItsNodeGoes(t *testing.T) {
	e := newClusterEnv(t)
	s := e.open("app_id=app", bearer(token(t, "alice")))
	s.Connected(t)
	p := startPublisher(t, e.js, "sse.app.alice")
	eventually(t, 20*time.Second, "some events", func() bool { return p.count() >= 20 })

	node := e.consumerNode()
	before := e.relay.metrics.replacedTotal()
	stopped := time.Now()
	e.cluster.byName(node).Shutdown()
	eventually(t, 60*time.Second, "the consumer to be replaced", func() bool {
		return e.relay.metrics.replacedTotal() > before && e.relay.Ready() == nil
	})
	t.Logf("consumer on %s replaced %s after its server stopped", node, time.Since(stopped).Round(time.Millisecond))
	n := p.count()
	eventually(t, 60*time.Second, "events after the replacement", func() bool { return p.count() >= n+20 })
	p.halt()

	p.expectAll(t, s)
}

// expectAll reads every acknowledged event from s, exactly once and in
// order, and then nothing.
func (p *publisher) expectAll(t testing.TB, s *sseStream) {
	t.Helper()
	for i, want := range p.acked {
		ev, err := s.Next(30 * time.Second)
		if err != nil {
			t.Fatalf("event %d of %d (seq %d): %v", i+1, len(p.acked), want, err)
		}
		if ev.ID != strconv.FormatUint(want, 10) {
			t.Fatalf("event %d: id %s, want %d (every acknowledged event once, in order)", i+1, ev.ID, want)
		}
	}
	s.ExpectQuiet(t, 200*time.Millisecond)
}

// TestConsumerUnreadyWithoutQuorum stops the consumer's server and one
// more, so that no consumer can be created (no meta leader): the relay is
// connected to the last server but cannot deliver, and readiness must say so
// for as long as that lasts. Once the servers are back it is ready again and
// nothing acknowledged is missing.
func TestConsumerUnreadyWithoutQuorum(t *testing.T) {
	e := newClusterEnv(t)
	s := e.open("app_id=app", bearer(token(t, "carol")))
	s.Connected(t)
	p := startPublisher(t, e.js, "sse.app.carol")
	eventually(t, 20*time.Second, "some events", func() bool { return p.count() >= 10 })

	node := e.consumerNode()
	stopped := []string{node}
	for _, srv := range e.cluster.servers {
		if srv.Name() != node {
			stopped = append(stopped, srv.Name())
			break
		}
	}
	for _, name := range stopped {
		e.cluster.stop(name)
	}
	eventually(t, 30*time.Second, "readiness to fail", func() bool { return e.relay.Ready() != nil })
	// Still unready a while later: nothing can be created without a leader.
	time.Sleep(3 * time.Second)
	if e.relay.Ready() == nil {
		t.Fatal("ready without a consumer")
	}
	for _, name := range stopped {
		e.cluster.restart(name)
	}
	eventually(t, 60*time.Second, "readiness to return", func() bool { return e.relay.Ready() == nil })
	n := p.count()
	eventually(t, 60*time.Second, "events after the servers came back", func() bool { return p.count() >= n+10 })
	p.halt()
	p.expectAll(t, s)
}

// TestConsumerReplacedWhenDeleted deletes the relay's consumer from outside:
// it is replaced and nothing is lost.
func TestConsumerReplacedWhenDeleted(t *testing.T) {
	e := newEnv(t)
	s := e.open("app_id=app", bearer(token(t, "bob")))
	s.Connected(t)
	first := e.publish("sse.app.bob", "1")
	s.ExpectIDs(t, first)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.js.DeleteConsumer(ctx, "SSE", e.relay.ConsumerName()); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "the consumer to be replaced", func() bool { return e.relay.metrics.replacedTotal() > 0 })
	var want []uint64
	for i := range 5 {
		want = append(want, e.publish("sse.app.bob", strconv.Itoa(i)))
	}
	s.ExpectIDs(t, want...)
	s.ExpectQuiet(t, 200*time.Millisecond)
}

// TestStartWaitsForQuorum starts a relay while two of the three servers are
// down, so that nobody can answer for the stream or create a consumer (no
// meta leader), for longer than one try may take: Start waits and retries,
// and once the servers are back it returns and the relay delivers. A start
// whose context ends first fails, saying why, and leaves nothing running.
func TestStartWaitsForQuorum(t *testing.T) {
	c := newTestCluster(t, 3)
	e := newR3Env(t, c, c.servers[0].ClientURL())
	down := []string{c.servers[1].Name(), c.servers[2].Name()}
	for _, name := range down {
		c.stop(name)
	}

	// Past its context, Start fails with the context's cause.
	r, err := New(Config{Conn: e.nc, Verifier: mustVerifier(t), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	cause := errors.New("test start budget")
	ctx, cancel := context.WithTimeoutCause(context.Background(), 2*consumerCreateTimeout, cause)
	err = r.Start(ctx)
	cancel()
	if !errors.Is(err, cause) {
		t.Fatalf("Start without quorum: %v, want an error naming %q", err, cause)
	}
	if err := r.Shutdown(context.Background()); err != nil {
		t.Fatalf("shutdown after a failed start: %v", err)
	}

	// With time to spare, Start outlasts the election.
	if e.relay, err = New(Config{Conn: e.nc, Verifier: mustVerifier(t), Logger: testLogger(t), Keepalive: time.Hour}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	started := make(chan error, 1)
	go func() { started <- e.relay.Start(ctx) }()
	select {
	case err := <-started:
		t.Fatalf("Start returned %v without quorum", err)
	case <-time.After(2 * consumerCreateTimeout):
	}
	for _, name := range down {
		c.restart(name)
	}
	if err := <-started; err != nil {
		t.Fatalf("Start after the servers came back: %v", err)
	}
	e.serveRelay()
	s := e.open("app_id=app", bearer(token(t, "dave")))
	s.Connected(t)
	var seq uint64
	eventually(t, 30*time.Second, "a publish to be acknowledged", func() bool {
		pctx, pcancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer pcancel()
		ack, err := e.js.Publish(pctx, "sse.app.dave", []byte("1"), jetstream.WithMsgID("d1"))
		if err != nil {
			return false
		}
		seq = ack.Sequence
		return true
	})
	s.ExpectIDs(t, seq)
}
