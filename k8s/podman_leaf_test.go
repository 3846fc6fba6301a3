package k8s_test

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sserelay/sserelay/test/testkit"
)

// TestKubePlayLeafSidecars runs two pods of k8s/leaf-sidecar's Deployment under `podman kube play`, each the
// example app with the relay beside it, whose embedded servers are leaf nodes of a hub: three nats-server
// processes (built from the module's own nats-server) in the manifest's JetStream domain, their leaf node ports
// on the podman bridge's host address. Only the hub's address is changed in the manifest (and what
// podmanDeployment changes for podman). An event the app publishes in pod A reaches a stream on pod B, and one
// from pod B reaches pod A, with the ids the apps were told: one stream in the hub, read by every pod.
func TestKubePlayLeafSidecars(t *testing.T) {
	buildImages(t)
	domain := manifestDomain(t, "leaf-sidecar")
	hub := startHub(t, podmanGateway(t), domain)
	env := map[string]string{"SSERELAY_LEAF_REMOTE": hub}
	a := playPod(t, "leaf-sidecar/deployment.yaml", "sserelay-leaf-a-"+suffix, env)
	b := playPod(t, "leaf-sidecar/deployment.yaml", "sserelay-leaf-b-"+suffix, env)

	onA := a.stream(t, a.token(t, "alice"))
	onB := b.stream(t, a.token(t, "alice")) // a token from one pod's app works on every pod
	seq := a.say(t, "alice", "from pod A")
	b.expect(t, onB, seq, "from pod A")
	a.expect(t, onA, seq, "from pod A")
	seq2 := b.say(t, "alice", "from pod B")
	if seq2 <= seq {
		t.Errorf("pod B's event got id %d after pod A's %d: not one stream", seq2, seq)
	}
	a.expect(t, onA, seq2, "from pod B")
	b.expect(t, onB, seq2, "from pod B")
}

// manifestDomain is the JetStream domain of the NATS servers of a topology. (A subtest: parsing nats.conf sets
// the container's variables, GOMEMLIMIT among them, which must not reach the podman commands that follow.)
func manifestDomain(t *testing.T, topology string) string {
	t.Helper()
	var domain string
	t.Run("domain", func(t *testing.T) {
		objs := load(t)[topology]
		for _, w := range workloads(objs) {
			for _, c := range allContainers(&w.pod.Spec) {
				if !isNATS(c) {
					continue
				}
				opts, err := natsConfig(t, w, c, objs)
				if err != nil {
					t.Fatal(err)
				}
				domain = opts.JetStreamDomain
				return
			}
		}
	})
	if domain == "" {
		t.Fatalf("%s: no NATS server with a JetStream domain", topology)
	}
	return domain
}

// podmanGateway is the host's address on podman's default network, where pods reach the host. The bridge
// exists once a container has run on it: run one.
func podmanGateway(t *testing.T) string {
	t.Helper()
	mustPodman(t, "", "run", "--rm", relayImage, "version")
	gw := mustPodman(t, "", "network", "inspect", "podman", "--format", "{{range .Subnets}}{{.Gateway}}{{end}}")
	if net.ParseIP(gw) == nil {
		t.Fatalf("podman network gateway %q", gw)
	}
	return gw
}

// startHub runs a 3-node JetStream cluster in domain with its client and route ports on 127.0.0.1 and its
// leaf node ports on leafHost, and returns the leaf node URLs, comma-separated, once every node is healthy.
func startHub(t *testing.T, leafHost, domain string) string {
	t.Helper()
	dir := t.TempDir()
	bin := bins.Build(t, "nats-server", "github.com/nats-io/nats-server/v2")
	type node struct{ client, route, leaf, mon int }
	var nodes []node
	for range 3 {
		nodes = append(nodes, node{testkit.FreePort(t), testkit.FreePort(t), testkit.FreePort(t), testkit.FreePort(t)})
	}
	var leafURLs []string
	for i, n := range nodes {
		var routes []string
		for j, o := range nodes {
			if j != i {
				routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", o.route))
			}
		}
		conf := fmt.Sprintf("server_name: hub%d\nlisten: 127.0.0.1:%d\nhttp: 127.0.0.1:%d\n"+
			"jetstream { store_dir: %q, domain: %s }\n"+
			"cluster { name: hub, listen: 127.0.0.1:%d, routes: [%s] }\n"+
			"leafnodes { listen: %s:%d }\n",
			i, n.client, n.mon, filepath.Join(dir, fmt.Sprint("store", i)), domain, n.route, strings.Join(routes, ", "), leafHost, n.leaf)
		file := filepath.Join(dir, fmt.Sprintf("hub%d.conf", i))
		if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		var out strings.Builder
		cmd := exec.Command(bin, "-c", file)
		cmd.Stdout, cmd.Stderr = &out, &out
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		t.Cleanup(func() {
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
			if t.Failed() {
				t.Logf("---- hub%d:\n%s", i, out.String())
			}
		})
		leafURLs = append(leafURLs, fmt.Sprintf("nats-leaf://%s:%d", leafHost, n.leaf))
	}
	for _, n := range nodes {
		waitHTTP(t, fmt.Sprintf("http://127.0.0.1:%d/healthz", n.mon), http.StatusOK, time.Minute, func() string { return "" })
	}
	return strings.Join(leafURLs, ",")
}
