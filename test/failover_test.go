package e2e_test

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/sserelay/sserelay/relay/sse/ssetest"
)

// TestClusterFailover: a 3-node JetStream cluster of nats-server processes,
// an R3 stream, two relays connected to different nodes, two streams on
// each, and a publisher that publishes without pause and keeps what was
// acknowledged. The stream leader is killed with SIGKILL, the meta leader
// stopped with SIGTERM, and the node relay A is connected to killed with
// SIGKILL, each down for a while and then restarted. Every acknowledged
// event reaches every stream exactly once, in order, with the id the
// publisher was told; relay A's readiness drops while it has no NATS and
// comes back; and no stream waits longer than the stall limit for an event
// acknowledged while a node is down. That is issue 13's stall: the relay's
// consumer stuck on a dead node until it returns; before the relay owned its
// consumer's lifecycle it showed in 3 of 3 runs, waits of 5.8 to 32.6 s for
// 10 s outages; after, the longest wait was 2.2 s on a quiet machine and
// 6.4 s with the whole e2e suite running beside it under the race detector.
//
// SSERELAY_FAILOVER_DOWN sets the outage (default 15s: longer than the limit,
// so a consumer stuck for the outage fails the test; the issue measured 35s),
// SSERELAY_FAILOVER_STALL_LIMIT the limit (default 10s: this box is shared
// and slow, and a wall-clock bound must not fail on its slowness; 5s is a
// fair value on a quiet machine), and SSERELAY_FAILOVER_RUNS repeats the run.
func TestClusterFailover(t *testing.T) {
	t.Parallel()
	stallLimit := envDuration(t, "SSERELAY_FAILOVER_STALL_LIMIT", 10*time.Second)
	runs := 1
	if v := os.Getenv("SSERELAY_FAILOVER_RUNS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("SSERELAY_FAILOVER_RUNS=%q: want a count", v)
		}
		runs = n
	}
	for run := 1; run <= runs; run++ {
		t.Run(fmt.Sprintf("run%d", run), func(t *testing.T) {
			r := runFailover(t)
			for _, ph := range r.phases {
				t.Logf("%-28s node %s down %s: max delay to a stream %s (%s), acked meanwhile %d", ph.name, ph.node, ph.down.Round(time.Millisecond), ph.maxDelay.Round(time.Millisecond), ph.worst, ph.acked)
				if ph.maxDelay > stallLimit {
					t.Errorf("%s: %s waited %s for an acknowledged event while node %s was down (limit %s)", ph.name, ph.worst, ph.maxDelay.Round(time.Millisecond), ph.node, stallLimit)
				}
			}
		})
	}
}

type failoverPhase struct {
	name, node string
	from, to   time.Time // the node was down in [from, to)
	down       time.Duration
	acked      int
	maxDelay   time.Duration // longest acknowledgement-to-arrival delay of an event acked in [from, to)
	worst      string        // the stream that had it
}

type failoverResult struct{ phases []failoverPhase }

// timedStream records when each event arrived.
type timedStream struct {
	name string
	*sseStream
	mu      sync.Mutex
	arrived map[string]time.Time // id → first seen
	done    chan struct{}
}

func openTimed(t *testing.T, name, url string, hdr map[string]string) (*timedStream, uint64) {
	t.Helper()
	s := &timedStream{name: name, sseStream: openStream(t, url, hdr), arrived: map[string]time.Time{}, done: make(chan struct{})}
	c := num(s.connected(t)["id"])
	go func() {
		defer close(s.done)
		for {
			b, err := s.Next(time.Second)
			if errors.Is(err, ssetest.ErrTimeout) {
				continue
			}
			if err != nil {
				return
			}
			if b.HasID {
				s.mu.Lock()
				if _, ok := s.arrived[b.Event.ID]; !ok {
					s.arrived[b.Event.ID] = time.Now()
				}
				s.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { s.close(); <-s.done })
	return s, c
}

func (s *timedStream) arrival(seq uint64) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	at, ok := s.arrived[strconv.FormatUint(seq, 10)]
	return at, ok
}

// readiness polls a relay's /readyz and remembers every time it was not 200.
type readiness struct {
	mu       sync.Mutex
	notReady []time.Time
	stop     chan struct{}
	done     chan struct{}
}

func watchReady(t *testing.T, base string) *readiness {
	rd := &readiness{stop: make(chan struct{}), done: make(chan struct{})}
	c := http.Client{Timeout: time.Second}
	go func() {
		defer close(rd.done)
		for {
			select {
			case <-rd.stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			ok := false
			if resp, err := c.Get(base + "/readyz"); err == nil {
				ok = resp.StatusCode == http.StatusOK
				resp.Body.Close()
			}
			if !ok {
				rd.mu.Lock()
				rd.notReady = append(rd.notReady, time.Now())
				rd.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { close(rd.stop); <-rd.done })
	return rd
}

func (rd *readiness) droppedIn(from, to time.Time) bool {
	rd.mu.Lock()
	defer rd.mu.Unlock()
	for _, at := range rd.notReady {
		if !at.Before(from) && at.Before(to) {
			return true
		}
	}
	return false
}

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	t.Helper()
	if v := os.Getenv(name); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return d
	}
	return def
}

// relayNode is the index of the node a relay is connected to: where it
// started, or the last one it logged a reconnect to.
func relayNode(t *testing.T, c *natsCluster, r *relayProc, start int) int {
	t.Helper()
	lines := r.jsonLines("NATS reconnected")
	if len(lines) == 0 {
		return start
	}
	u, err := url.Parse(fmt.Sprint(lines[len(lines)-1]["url"]))
	if err != nil {
		t.Fatalf("reconnect url: %v", err)
	}
	for i, nd := range c.nodes {
		if u.Port() == strconv.Itoa(nd.client) {
			return i
		}
	}
	t.Fatalf("relay reconnected to %s, not a node of the cluster", u)
	return -1
}

func runFailover(t *testing.T) failoverResult {
	t.Helper()
	down := envDuration(t, "SSERELAY_FAILOVER_DOWN", 15*time.Second)
	c := startCluster(t, 3, clusterOpts{})
	const secret = "failover-secret"
	// Each relay is given one node; it learns the others from the cluster.
	a := startRelay(t, relayOpts{Secret: secret, NATSURL: c.url(0), Args: []string{"--stream-replicas", "3"}})
	b := startRelay(t, relayOpts{Secret: secret, NATSURL: c.url(1), Args: []string{"--stream-replicas", "3"}})
	readyA := watchReady(t, a.URL)

	alice := token(t, secret, "alice", "--app", "app")
	hdr := map[string]string{"Authorization": "Bearer " + alice}
	q := "/v1/events?" + url.Values{"app_id": {"app"}}.Encode()
	var streams []*timedStream
	var start uint64
	for _, r := range []struct {
		name string
		r    *relayProc
	}{{"A1", a}, {"A2", a}, {"B1", b}, {"B2", b}} {
		s, cur := openTimed(t, "stream "+r.name+" on relay "+r.name[:1], r.r.URL+q, hdr)
		streams = append(streams, s)
		if start == 0 || cur < start {
			start = cur
		}
	}

	pp := newAckPublisher("sse.app.alice")
	nc, err := nats.Connect(c.urls(), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond), nats.ReconnectBufSize(-1))
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	pubDone := pp.run(t, nc, "publisher", stop)
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		<-pubDone
	}()
	settled := func(what string) {
		t.Helper()
		// Every node back and current before the next fault: else the next
		// one could take the quorum away, which is not what is tested.
		eventually(t, waitLong, what+": every node current in the meta group and the stream", func() bool {
			return c.metaCurrent() && c.streamCurrent("SSE")
		})
		n := pp.count()
		eventually(t, waitLong, what+": 30 more acknowledged events", func() bool { return pp.count() >= n+30 })
	}
	settled("start")

	var res failoverResult
	faults := []struct {
		name string
		pick func() int
		stop func(int)
	}{
		{"kill -9 the stream leader", func() int { return c.index(c.streamLeader("SSE")) }, c.kill9},
		{"SIGTERM the meta leader", func() int { return c.index(c.metaLeader()) }, c.term},
		{"kill -9 relay A's node", func() int { return relayNode(t, c, a, 0) }, c.kill9},
	}
	// Relay A's consumer replacements: a reconnect, or missed heartbeats.
	replacedA := func() float64 {
		return metric(t, a.URL, `sserelay_consumer_replaced_total{reason="reconnect"}`) +
			metric(t, a.URL, `sserelay_consumer_replaced_total{reason="no-heartbeat"}`)
	}
	for _, f := range faults {
		i := f.pick()
		replacedBefore := replacedA()
		ph := failoverPhase{name: f.name, node: c.nodes[i].name, from: time.Now()}
		n := pp.count()
		f.stop(i)
		time.Sleep(down)
		ph.to = time.Now()
		ph.down = ph.to.Sub(ph.from)
		ph.acked = pp.count() - n
		c.start(i)
		if f.name == "kill -9 relay A's node" {
			// Relay A reconnects to another node within milliseconds and is
			// unready only while it does and while it replaces its consumer:
			// a probe every 50 ms may miss that, so the replacement (which
			// Ready reports while it lasts) is what must be seen.
			dropped := readyA.droppedIn(ph.from, ph.to.Add(5*time.Second))
			replaced := replacedA() > replacedBefore
			t.Logf("%s: /readyz seen failing %v, consumer replaced %v", f.name, dropped, replaced)
			if !dropped && !replaced {
				t.Errorf("%s: relay A neither reported unready nor replaced its consumer after losing its node", f.name)
			}
		}
		settled("after " + f.name)
		res.phases = append(res.phases, ph)
	}
	close(stop)
	<-pubDone
	last := pp.last().seq
	for _, s := range streams {
		s.waitID(t, last)
	}
	eventually(t, waitLong, "relay A ready at the end", func() bool {
		resp, err := httpClient.Get(a.URL + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})

	acked := pp.snapshot()
	for _, s := range streams {
		pp.checkExact(t, s.name, dataEvents(s.events()), start, last)
	}
	for pi := range res.phases {
		ph := &res.phases[pi]
		for _, e := range acked {
			if e.at.Before(ph.from) || !e.at.Before(ph.to) {
				continue
			}
			for _, s := range streams {
				if at, ok := s.arrival(e.seq); ok && at.Sub(e.at) > ph.maxDelay {
					ph.maxDelay, ph.worst = at.Sub(e.at), s.name
				}
			}
		}
	}
	var report []string
	for _, ph := range res.phases {
		report = append(report, fmt.Sprintf("%s: %s", ph.name, ph.maxDelay.Round(time.Millisecond)))
	}
	t.Logf("%d events acknowledged, %d publishes failed; max delays: %s", pp.count(), pp.failed(), strings.Join(report, "; "))
	return res
}
