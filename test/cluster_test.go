package e2e_test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sserelay/sserelay/test/testkit"
)

// natsCluster is a JetStream cluster of nats-server processes (built from
// the module's own nats-server), each with its store in a temp dir, so a
// node can be killed and restarted on the same store.
type natsCluster struct {
	t     *testing.T
	bin   string
	nodes []*natsNode
}

type natsNode struct {
	name, conf               string
	client, route, leaf, mon int
	leafHost                 string
	p                        *proc
}

// clusterOpts: Domain is the JetStream domain ("" none); LeafHost, when
// set, opens a leaf node port on that address on every node.
type clusterOpts struct {
	Domain   string
	LeafHost string
}

func startCluster(t *testing.T, n int, o clusterOpts) *natsCluster {
	t.Helper()
	c := &natsCluster{t: t, bin: natsServer(t)}
	dir := t.TempDir()
	for i := range n {
		nd := &natsNode{name: fmt.Sprintf("n%d", i+1), client: testkit.FreePort(t), route: testkit.FreePort(t), mon: testkit.FreePort(t), leafHost: o.LeafHost}
		if o.LeafHost != "" {
			nd.leaf = testkit.FreePort(t)
		}
		c.nodes = append(c.nodes, nd)
	}
	for i, nd := range c.nodes {
		var routes []string
		for _, other := range c.nodes {
			if other != nd {
				routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", other.route))
			}
		}
		var b strings.Builder
		fmt.Fprintf(&b, "server_name: %s\nlisten: 127.0.0.1:%d\nhttp: 127.0.0.1:%d\n", nd.name, nd.client, nd.mon)
		fmt.Fprintf(&b, "jetstream { store_dir: %q", filepath.Join(dir, nd.name))
		if o.Domain != "" {
			fmt.Fprintf(&b, ", domain: %s", o.Domain)
		}
		b.WriteString(" }\n")
		fmt.Fprintf(&b, "cluster { name: hub, listen: 127.0.0.1:%d, routes: [%s] }\n", nd.route, strings.Join(routes, ", "))
		if nd.leaf != 0 {
			fmt.Fprintf(&b, "leafnodes { listen: %s:%d }\n", o.LeafHost, nd.leaf)
		}
		nd.conf = filepath.Join(dir, nd.name+".conf")
		if err := os.WriteFile(nd.conf, []byte(b.String()), 0o644); err != nil {
			t.Fatal(err)
		}
		c.start(i)
	}
	eventually(t, waitLong, "a JetStream meta leader with every node current", c.metaCurrent)
	return c
}

// metaCurrent: the meta leader sees every other node as a current peer, so
// that an R3 stream can be placed (before that, creating it fails with "no
// suitable peers for placement").
func (c *natsCluster) metaCurrent() bool {
	leader := c.metaLeader()
	if leader == "" {
		return false
	}
	j, err := c.jsz(c.index(leader))
	if err != nil || len(j.Meta.Replicas) != len(c.nodes)-1 {
		return false
	}
	for _, r := range j.Meta.Replicas {
		if !r.Current {
			return false
		}
	}
	return true
}

// start runs node i (again) and waits until it accepts clients.
func (c *natsCluster) start(i int) {
	c.t.Helper()
	nd := c.nodes[i]
	nd.p = startProc(c.t, "nats-server "+nd.name, exec.Command(c.bin, "-c", nd.conf))
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(nd.client))
	eventually(c.t, waitLong, nd.name+" to accept connections", func() bool {
		if nd.p.exited() {
			c.t.Fatalf("%s exited: %v", nd.name, nd.p.err)
		}
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false
		}
		conn.Close()
		return true
	})
}

// kill9 kills node i with SIGKILL; term stops it with SIGTERM and waits.
func (c *natsCluster) kill9(i int) { c.nodes[i].p.kill() }

func (c *natsCluster) term(i int) {
	c.t.Helper()
	c.nodes[i].p.signal(c.t, syscall.SIGTERM)
	c.nodes[i].p.wait(c.t, waitLong)
}

func (c *natsCluster) url(i int) string { return fmt.Sprintf("nats://127.0.0.1:%d", c.nodes[i].client) }

func (c *natsCluster) urls() string {
	var u []string
	for i := range c.nodes {
		u = append(u, c.url(i))
	}
	return strings.Join(u, ",")
}

// leafURLs are the leaf node URLs of every node, comma-separated.
func (c *natsCluster) leafURLs() string {
	var u []string
	for _, nd := range c.nodes {
		u = append(u, fmt.Sprintf("nats-leaf://%s:%d", nd.leafHost, nd.leaf))
	}
	return strings.Join(u, ",")
}

func (c *natsCluster) index(name string) int {
	for i, nd := range c.nodes {
		if nd.name == name {
			return i
		}
	}
	c.t.Fatalf("no node %q", name)
	return -1
}

// jsz asks a running node's monitoring port for JetStream's view of the
// cluster: the meta leader and, per stream, the leader.
type jszInfo struct {
	Meta struct {
		Leader   string `json:"leader"`
		Replicas []struct {
			Name    string `json:"name"`
			Current bool   `json:"current"`
		} `json:"replicas"`
	} `json:"meta_cluster"`
	Accounts []struct {
		Streams []struct {
			Name    string `json:"name"`
			Cluster struct {
				Leader   string `json:"leader"`
				Replicas []struct {
					Name    string `json:"name"`
					Current bool   `json:"current"`
				} `json:"replicas"`
			} `json:"cluster"`
		} `json:"stream_detail"`
	} `json:"account_details"`
}

func (c *natsCluster) jsz(i int) (jszInfo, error) {
	var j jszInfo
	cl := http.Client{Timeout: 2 * time.Second}
	resp, err := cl.Get(fmt.Sprintf("http://127.0.0.1:%d/jsz?accounts=true&streams=true", c.nodes[i].mon))
	if err != nil {
		return j, err
	}
	defer resp.Body.Close()
	return j, json.NewDecoder(resp.Body).Decode(&j)
}

// metaLeader is the meta leader's name as a running node sees it ("" none).
func (c *natsCluster) metaLeader() string {
	for i, nd := range c.nodes {
		if nd.p.exited() {
			continue
		}
		if j, err := c.jsz(i); err == nil && j.Meta.Leader != "" {
			return j.Meta.Leader
		}
	}
	return ""
}

// streamLeader is the name of stream's leader as a running node sees it.
func (c *natsCluster) streamLeader(stream string) string {
	for i, nd := range c.nodes {
		if nd.p.exited() {
			continue
		}
		j, err := c.jsz(i)
		if err != nil {
			continue
		}
		for _, a := range j.Accounts {
			for _, s := range a.Streams {
				if s.Name == stream && s.Cluster.Leader != "" {
					return s.Cluster.Leader
				}
			}
		}
	}
	return ""
}

// streamCurrent: stream has a leader that sees every other node as a
// current replica.
func (c *natsCluster) streamCurrent(stream string) bool {
	leader := c.streamLeader(stream)
	if leader == "" {
		return false
	}
	j, err := c.jsz(c.index(leader))
	if err != nil {
		return false
	}
	for _, a := range j.Accounts {
		for _, s := range a.Streams {
			if s.Name != stream || s.Cluster.Leader != leader {
				continue
			}
			if len(s.Cluster.Replicas) != len(c.nodes)-1 {
				return false
			}
			for _, r := range s.Cluster.Replicas {
				if !r.Current {
					return false
				}
			}
			return true
		}
	}
	return false
}
