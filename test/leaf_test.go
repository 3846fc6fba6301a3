package e2e_test

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
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

// publishFrom starts an app inside pod i: it publishes through JetStream to
// the pod's own 127.0.0.1:4222 until stop is closed.
func publishFrom(t *testing.T, pp *ackPublisher, pn *podNet, pod int, stop <-chan struct{}) <-chan struct{} {
	t.Helper()
	nc, err := nats.Connect("nats://127.0.0.1:4222", nats.SetCustomDialer(natsDialer(pn.dialer(pod))),
		nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond), nats.ReconnectBufSize(-1))
	if err != nil {
		t.Fatalf("app in pod %d: %v", pod, err)
	}
	return pp.run(t, nc, fmt.Sprintf("pod %d", pod), stop)
}

// TestLeafSidecars: two pods, each a relay whose embedded server is a leaf
// node of a 3-node hub (R3 stream in the hub's domain), each in its own
// network namespace so that both use 127.0.0.1:4222. An app publishes in pod
// A and a client on pod B gets it; pod A's hub link is cut and restored; pod
// A is killed with SIGKILL and its client resumes on pod B with
// Last-Event-ID; every acknowledged event arrives exactly once, in order.
func TestLeafSidecars(t *testing.T) {
	// Not parallel: creating the pods' bridge changes the host's network
	// interfaces, and Chromium then drops every connection it has, which the
	// browser tests (parallel ones) would see as reconnects. A serial test
	// runs while the parallel ones wait.
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

	pp := newAckPublisher("sse.app.alice")
	stopA := make(chan struct{})
	doneA := publishFrom(t, pp, pn, 0, stopA)
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
	t.Logf("hub link of pod A cut: /readyz 503 after %s, %d events acknowledged meanwhile, %d publishes failed", unready.Round(time.Millisecond), duringCut, pp.failed())

	// SIGKILL pod A's relay (and so its leaf: the app there loses NATS);
	// its client resumes on pod B from the last id it got; the app goes on
	// publishing in pod B.
	a.kill()
	close(stopA)
	<-doneA
	gotA := dataEvents(sa.events())
	lastA := gotA[len(gotA)-1].ID
	stopB := make(chan struct{})
	doneB := publishFrom(t, pp, pn, 1, stopB)
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
	t.Logf("%d events acknowledged, %d publishes failed; pod A's client resumed on pod B after id %s", pp.count(), pp.failed(), lastA)
}
