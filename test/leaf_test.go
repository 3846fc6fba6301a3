package e2e_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// podRelay is `sserelay serve` in a pod's network namespace, its embedded
// server a leaf node of the hub: HTTP on 0.0.0.0:8080, NATS for the pod's
// app on 127.0.0.1:4222, exactly as in the leaf-sidecar manifests.
type podRelay struct {
	*proc
	URL string // from the host
}

func startPodRelay(t *testing.T, pn *podNet, i int, secret, leafURLs string) *podRelay {
	t.Helper()
	cmd := pn.command(i, relayBin, "serve", "--jwt-secret", secret, "--listen", "0.0.0.0:8080",
		"--nats-listen", "127.0.0.1:4222", "--leaf-remote", leafURLs, "--js-domain", "hub", "--stream-replicas", "3",
		"--server-name", fmt.Sprintf("pod-%d", i), "--log-format", "json", "--log-level", "debug", "--no-demo")
	cmd.Env = cleanEnv("GORACE=halt_on_error=0")
	r := &podRelay{proc: startProc(t, fmt.Sprintf("relay in pod %d", i), cmd), URL: "http://" + pn.pods[i].IP + ":8080"}
	r.waitJSON(t, "sserelay listening", nil)
	eventually(t, waitLong, "pod relay /readyz 200", func() bool { return r.ready() == http.StatusOK })
	return r
}

// ready returns the status of /readyz (0: no answer).
func (r *podRelay) ready() int {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(r.URL + "/readyz")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

// podPublisher is an app inside a pod: it publishes through JetStream to the
// pod's own 127.0.0.1:4222, one event at a time, and records what the stream
// acknowledged.
type podPublisher struct {
	mu       sync.Mutex
	acked    []ev // in acknowledgement order
	attempts map[string]bool
	failures int
	n        atomic.Int64
}

func (pp *podPublisher) publishFrom(t *testing.T, pn *podNet, pod int, stop <-chan struct{}) <-chan struct{} {
	t.Helper()
	nc, err := nats.Connect("nats://127.0.0.1:4222", nats.SetCustomDialer(natsDialer(pn.dialer(pod))),
		nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond), nats.ReconnectBufSize(-1))
	if err != nil {
		t.Fatalf("app in pod %d: %v", pod, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer nc.Close()
		for {
			select {
			case <-stop:
				return
			default:
			}
			data := fmt.Sprintf("pod %d event %d", pod, pp.n.Add(1))
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			ack, err := js.Publish(ctx, "sse.app.alice", []byte(data))
			cancel()
			pp.mu.Lock()
			pp.attempts[data] = true
			if err == nil {
				pp.acked = append(pp.acked, ev{seq: ack.Sequence, data: data})
			} else {
				pp.failures++
			}
			pp.mu.Unlock()
			wait := 20 * time.Millisecond
			if err != nil {
				wait = 100 * time.Millisecond
			}
			select {
			case <-stop:
				return
			case <-time.After(wait):
			}
		}
	}()
	return done
}

func (pp *podPublisher) count() int { pp.mu.Lock(); defer pp.mu.Unlock(); return len(pp.acked) }

func (pp *podPublisher) last() ev {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	return pp.acked[len(pp.acked)-1]
}

// checkExact: the data events of got are in strictly increasing order, each
// once; every acknowledged event in (from, to] is there with its data; and
// anything else there is an attempt the publisher made (stored, but its
// acknowledgement was lost).
func (pp *podPublisher) checkExact(t *testing.T, what string, got []sseEvent, from, to uint64) {
	t.Helper()
	pp.mu.Lock()
	defer pp.mu.Unlock()
	seen := map[uint64]string{}
	var prev uint64
	for _, e := range got {
		seq, _ := strconv.ParseUint(e.ID, 10, 64)
		if seq <= prev {
			t.Errorf("%s: id %d after %d", what, seq, prev)
		}
		prev = seq
		if seq <= from {
			t.Errorf("%s: id %d not after %d", what, seq, from)
		}
		seen[seq] = e.Data
		if !pp.attempts[e.Data] {
			t.Errorf("%s: event %d %q was never published", what, seq, e.Data)
		}
	}
	lost := 0
	for _, a := range pp.acked {
		if a.seq <= from || a.seq > to {
			continue
		}
		if d, ok := seen[a.seq]; !ok || d != a.data {
			if lost++; lost <= 5 {
				t.Errorf("%s: acknowledged event %d %q: got %q (present %v)", what, a.seq, a.data, d, ok)
			}
		}
	}
	if lost > 0 {
		t.Errorf("%s: %d acknowledged events missing or wrong", what, lost)
	}
}

// TestLeafSidecars: two pods, each a relay whose embedded server is a leaf
// node of a 3-node hub (R3 stream in the hub's domain), each in its own
// network namespace so that both use 127.0.0.1:4222. An app publishes in pod
// A and a client on pod B gets it; pod A's hub link is cut and restored; pod
// A is killed with SIGKILL and its client resumes on pod B with
// Last-Event-ID; every acknowledged event arrives exactly once, in order.
func TestLeafSidecars(t *testing.T) {
	pn := newPodNet(t, 2)
	hub := startCluster(t, 3, clusterOpts{Domain: "hub", LeafHost: pn.HostIP})
	const secret = "leaf-sidecar-secret"
	a := startPodRelay(t, pn, 0, secret, hub.leafURLs())
	b := startPodRelay(t, pn, 1, secret, hub.leafURLs())
	alice := token(t, secret, "alice", "--app", "app")
	hdr := map[string]string{"Authorization": "Bearer " + alice}
	q := "/v1/events?" + url.Values{"app_id": {"app"}}.Encode()

	sa := openStream(t, a.URL+q, hdr)
	start := num(sa.connected(t)["id"])
	sb := openStream(t, b.URL+q, hdr)
	sb.connected(t)

	pp := &podPublisher{attempts: map[string]bool{}}
	stopA := make(chan struct{})
	doneA := pp.publishFrom(t, pn, 0, stopA)
	eventually(t, waitLong, "40 events acknowledged in pod A", func() bool { return pp.count() >= 40 })
	sb.waitID(t, pp.last().seq) // published in A, delivered by B

	// Cut pod A off the hub: its app's publishes fail (no acknowledgement)
	// and its relay is not ready; then the link comes back.
	cutAt := pp.count()
	pn.cut(0)
	cut := time.Now()
	inPod := pn.httpClient(0)
	eventually(t, waitLong, "pod A not ready while cut off", func() bool {
		resp, err := inPod.Get("http://127.0.0.1:8080/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	})
	unready := time.Since(cut)
	time.Sleep(2 * time.Second)
	duringCut := pp.count() - cutAt
	pn.restore(0)
	eventually(t, waitLong, "pod A ready again", func() bool { return a.ready() == http.StatusOK })
	eventually(t, waitLong, "publishing in pod A again", func() bool { return pp.count() >= cutAt+duringCut+20 })
	sa.waitID(t, pp.last().seq)
	sb.waitID(t, pp.last().seq)
	t.Logf("hub link of pod A cut: /readyz 503 after %s, %d events acknowledged meanwhile, %d publishes failed", unready.Round(time.Millisecond), duringCut, pp.failures)

	// SIGKILL pod A's relay (and so its leaf: the app there loses NATS);
	// its client resumes on pod B from the last id it got; the app goes on
	// publishing in pod B.
	a.kill()
	close(stopA)
	<-doneA
	gotA := dataEvents(sa.events())
	lastA := gotA[len(gotA)-1].ID
	stopB := make(chan struct{})
	doneB := pp.publishFrom(t, pn, 1, stopB)
	hdrB := map[string]string{"Authorization": "Bearer " + alice, "Last-Event-ID": lastA}
	sr := openStream(t, b.URL+q, hdrB)
	sr.connected(t)
	base := pp.count()
	eventually(t, waitLong, "30 events acknowledged in pod B", func() bool { return pp.count() >= base+30 })
	close(stopB)
	<-doneB
	final := pp.last().seq
	sr.waitID(t, final)
	sb.waitID(t, final)

	from, _ := strconv.ParseUint(lastA, 10, 64)
	pp.checkExact(t, "pod A's stream", gotA, start, from)
	pp.checkExact(t, "pod B's stream", dataEvents(sb.events()), start, final)
	pp.checkExact(t, "resumed on pod B", dataEvents(sr.events()), from, final)
	t.Logf("%d events acknowledged, %d publishes failed; pod A's client resumed on pod B after id %s", pp.count(), pp.failures, lastA)
}
