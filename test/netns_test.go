package e2e_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// podNet gives "pods" their own network namespaces, as Kubernetes does: each
// has its own loopback (so that every pod's relay really listens on
// 127.0.0.1:4222) and an eth0 on a bridge that the test creates on the host,
// where the hub listens. Everything is removed by name at cleanup.
type podNet struct {
	t      *testing.T
	bridge string
	HostIP string // the bridge's address: where the hub's leaf ports listen
	pods   []netPod
}

type netPod struct {
	NS   string // namespace name, for ip netns exec
	IP   string // eth0's address, reachable from the host
	veth string // the host end of its veth pair
}

// newPodNet needs root and iproute2; without them the test is skipped (or
// fails under CI).
func newPodNet(t *testing.T, n int) *podNet {
	t.Helper()
	ip := tool(t, "", "ip", "/usr/sbin/ip", "/sbin/ip")
	if os.Geteuid() != 0 {
		missing(t, "network namespaces need root")
	}
	// Names and a subnet of this run only: other runs may be doing the same.
	id := os.Getpid()
	subnet := fmt.Sprintf("10.%d.%d", 200+id%50, (id/50)%250)
	pn := &podNet{t: t, bridge: fmt.Sprintf("srb%d", id), HostIP: subnet + ".1"}
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command(ip, args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	t.Cleanup(func() {
		for _, p := range pn.pods {
			_ = exec.Command(ip, "link", "del", p.veth).Run()
			_ = exec.Command(ip, "netns", "del", p.NS).Run()
		}
		_ = exec.Command(ip, "link", "del", pn.bridge).Run()
	})
	run("link", "add", pn.bridge, "type", "bridge")
	run("addr", "add", pn.HostIP+"/24", "dev", pn.bridge)
	run("link", "set", pn.bridge, "up")
	for i := range n {
		p := netPod{NS: fmt.Sprintf("sserelay-e2e-%d-%d", id, i), IP: fmt.Sprintf("%s.%d", subnet, 10+i), veth: fmt.Sprintf("srv%d-%d", id, i)}
		peer := fmt.Sprintf("srp%d-%d", id, i)
		pn.pods = append(pn.pods, p)
		run("netns", "add", p.NS)
		run("link", "add", p.veth, "type", "veth", "peer", "name", peer)
		run("link", "set", p.veth, "master", pn.bridge)
		run("link", "set", p.veth, "up")
		run("link", "set", peer, "netns", p.NS)
		run("-n", p.NS, "link", "set", peer, "name", "eth0")
		run("-n", p.NS, "addr", "add", p.IP+"/24", "dev", "eth0")
		run("-n", p.NS, "link", "set", "eth0", "up")
		run("-n", p.NS, "link", "set", "lo", "up")
	}
	return pn
}

// cut takes pod i off the network (its loopback stays); restore brings it back.
func (pn *podNet) cut(i int)     { pn.link(i, "down") }
func (pn *podNet) restore(i int) { pn.link(i, "up") }

func (pn *podNet) link(i int, state string) {
	pn.t.Helper()
	if out, err := exec.Command("ip", "link", "set", pn.pods[i].veth, state).CombinedOutput(); err != nil {
		pn.t.Fatalf("ip link set %s %s: %v\n%s", pn.pods[i].veth, state, err, out)
	}
}

// command runs name inside pod i's namespace.
func (pn *podNet) command(i int, name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", pn.pods[i].NS, name}, args...)...)
}

// dialer dials from inside pod i's namespace, so that 127.0.0.1 is the pod's
// loopback: the socket is created on an OS thread moved into the namespace.
func (pn *podNet) dialer(i int) func(ctx context.Context, network, addr string) (net.Conn, error) {
	path := "/var/run/netns/" + pn.pods[i].NS
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		type result struct {
			c   net.Conn
			err error
		}
		ch := make(chan result, 1)
		go func() {
			c, err := dialIn(ctx, path, network, addr)
			ch <- result{c, err}
		}()
		r := <-ch
		return r.c, r.err
	}
}

func dialIn(ctx context.Context, nsPath, network, addr string) (net.Conn, error) {
	runtime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer orig.Close()
	target, err := os.Open(nsPath)
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer target.Close()
	if err := setns(target); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("setns %s: %w", nsPath, err)
	}
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	// Back home; if that fails the thread stays locked and ends with this
	// goroutine, so no other goroutine runs in the pod's namespace.
	if setns(orig) == nil {
		runtime.UnlockOSThread()
	}
	return c, err
}

func setns(f *os.File) error {
	return unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
}

// natsDialer adapts dialer to nats.CustomDialer.
type natsDialer func(ctx context.Context, network, addr string) (net.Conn, error)

func (d natsDialer) Dial(network, addr string) (net.Conn, error) {
	return d(context.Background(), network, addr)
}

// httpClient returns an HTTP client whose connections start inside pod i.
func (pn *podNet) httpClient(i int) *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: pn.dialer(i), DisableCompression: true}}
}
