package relay

import (
	"bytes"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// BenchmarkOpenStream opens a stream on a new loopback connection, reads
// its head and connected event, closes it and waits until the relay has
// ended the session: the whole life of a stream that gets no event, as in a
// reconnect storm. The client is a raw socket writing a fixed request, so
// that allocs/op (every allocation of the process: relay, NATS and client)
// is mostly the relay's. The token is the same each time, as for a client
// that reconnects: it is verified from the cache from the third open on.
// Another stream stays open throughout, so that the poller and keepalive
// goroutines run as on a relay with clients, instead of starting and
// stopping with each stream. cpu-ns/op is the CPU time of the whole
// process per stream, less sensitive than ns/op to other load on the
// machine.
//
//   - header: the token in Authorization, the app and nothing else.
//   - query: what a browser's EventSource sends (the token in the query),
//     with two feeds, a topic and a connection id.
func BenchmarkOpenStream(b *testing.B) {
	e := newEnv(b, withConfig(func(c *Config) {
		c.UserStreamRate = -1 // one stream per iteration
		c.IPStreamRate = -1
	}))
	tok := token(b, "alice", claimFeeds("alice", "team-7"))
	anchor := e.open("app_id=demo", bearer(tok))
	anchor.Connected(b)
	e.waitOpen(1)
	addr := strings.TrimPrefix(e.url, "http://")
	b.Run("header", func(b *testing.B) {
		benchOpen(b, e, addr, "GET /v1/events?app_id=demo HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer "+tok+"\r\n\r\n")
	})
	b.Run("query", func(b *testing.B) {
		benchOpen(b, e, addr, "GET /v1/events?app_id=demo&feed=alice&feed=team-7&topic=orders.eu&connection_id=tab-0001-ab&access_token="+tok+
			" HTTP/1.1\r\nHost: relay\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n")
	})
}

func benchOpen(b *testing.B, e *testEnv, addr, request string) {
	req := []byte(request)
	buf := make([]byte, 4096)
	open := func() {
		conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		_ = conn.SetDeadline(time.Now().Add(30 * time.Second)) // a hang guard
		if _, err := conn.Write(req); err != nil {
			b.Fatal(err)
		}
		n := 0
		for !bytes.Contains(buf[:n], []byte("sserelay.connected")) || !bytes.HasSuffix(buf[:n], []byte("\n\n")) {
			m, err := conn.Read(buf[n:])
			if err != nil {
				b.Fatalf("read %q: %v", buf[:n], err)
			}
			n += m
		}
		if !bytes.HasPrefix(buf, []byte("HTTP/1.1 200 OK\r\n")) {
			b.Fatalf("answer %q", buf[:n])
		}
		// The client's half-close is what the relay sees of a client that
		// leaves; its close of the connection ends the read, once the
		// session has ended, without a wait that spins.
		if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
			b.Fatal(err)
		}
		if m, err := conn.Read(buf); m > 0 || err != io.EOF {
			b.Fatalf("after the connected event: %q, %v; want the end of the stream", buf[:m], err)
		}
		conn.Close()
		if e.relay.OpenStreams() != 1 {
			b.Fatalf("%d open streams after the stream ended, want 1", e.relay.OpenStreams())
		}
	}
	for range 3 { // warm up: the token cache, pools
		open()
	}
	b.ReportAllocs()
	cpu0 := processCPU(b)
	for b.Loop() {
		open()
	}
	b.ReportMetric(float64(processCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
}
