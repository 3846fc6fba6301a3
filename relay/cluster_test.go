package relay

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// testCluster is a JetStream cluster of real nats-servers in this process,
// routed over loopback.
type testCluster struct {
	t       testing.TB
	servers []*server.Server
	opts    []*server.Options
}

// newTestCluster starts n clustered servers and waits for a meta leader.
func newTestCluster(t testing.TB, n int) *testCluster {
	t.Helper()
	// Client and cluster ports, held open until all are picked so that no
	// two are the same; fixed so that a restarted server comes back on them.
	ports := make([]int, 2*n)
	var held []net.Listener
	for i := range ports {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, ln)
		ports[i] = ln.Addr().(*net.TCPAddr).Port
	}
	for _, ln := range held {
		ln.Close()
	}
	clientPorts, ports := ports[n:], ports[:n]
	var routes []string
	for _, p := range ports {
		routes = append(routes, fmt.Sprintf("nats://127.0.0.1:%d", p))
	}
	c := &testCluster{t: t}
	for i := range n {
		o := &server.Options{
			ServerName: fmt.Sprintf("n%d", i+1),
			Host:       "127.0.0.1",
			Port:       clientPorts[i],
			JetStream:  true,
			StoreDir:   t.TempDir(),
			NoSigs:     true,
			NoLog:      true,
			Cluster:    server.ClusterOpts{Name: "relay-test", Host: "127.0.0.1", Port: ports[i]},
			Routes:     server.RoutesFromStr(strings.Join(routes, ",")),
		}
		s, err := server.NewServer(o)
		if err != nil {
			t.Fatal(err)
		}
		go s.Start()
		if !s.ReadyForConnections(10 * time.Second) {
			t.Fatalf("server %s not ready", o.ServerName)
		}
		c.servers = append(c.servers, s)
		c.opts = append(c.opts, o)
	}
	t.Cleanup(func() {
		for _, s := range c.servers {
			s.Shutdown()
			s.WaitForShutdown()
		}
	})
	eventually(t, 20*time.Second, "a JetStream meta leader", func() bool {
		for _, s := range c.servers {
			if s.Running() && s.JetStreamIsLeader() {
				return true
			}
		}
		return false
	})
	return c
}

// urls returns the client URLs of the servers, comma-separated.
func (c *testCluster) urls() string {
	var u []string
	for _, s := range c.servers {
		u = append(u, s.ClientURL())
	}
	return strings.Join(u, ",")
}

// byName returns the server with that name.
func (c *testCluster) byName(name string) *server.Server {
	for _, s := range c.servers {
		if s.Name() == name {
			return s
		}
	}
	c.t.Fatalf("no server %q", name)
	return nil
}

// stop shuts the named server down, as a node that leaves would.
func (c *testCluster) stop(name string) {
	c.t.Helper()
	s := c.byName(name)
	s.Shutdown()
	s.WaitForShutdown()
}

// restart starts the named server again on its store and cluster port.
func (c *testCluster) restart(name string) {
	c.t.Helper()
	for i, s := range c.servers {
		if s.Name() != name {
			continue
		}
		o := c.opts[i].Clone()
		ns, err := server.NewServer(o)
		if err != nil {
			c.t.Fatal(err)
		}
		go ns.Start()
		if !ns.ReadyForConnections(10 * time.Second) {
			c.t.Fatalf("server %s not ready after a restart", name)
		}
		c.servers[i] = ns
		return
	}
	c.t.Fatalf("no server %q", name)
}

// connect opens a client connection that reconnects for ever.
func (c *testCluster) connect(url string) *nats.Conn {
	c.t.Helper()
	nc, err := nats.Connect(url, nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond), nats.ReconnectBufSize(-1))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(nc.Close)
	return nc
}
