package bench

import (
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestSourceAddrs(t *testing.T) {
	for _, tc := range []struct {
		host  string
		n     int
		conns int
		want  int // addresses; -1: an error
	}{
		{"127.0.0.1", 0, 100, 0},
		{"127.0.0.1", 0, 100_000, 7},
		{"127.0.0.1", 0, 16_384, 0},
		{"127.0.0.1", 0, 16_385, 2},
		{"localhost", 3, 10, 3},
		{"127.0.0.5", 1, 100_000, 0},
		{"10.1.2.3", 0, 100_000, 0}, // not loopback: the kernel's choice
		{"10.1.2.3", 2, 10, -1},
		{"relay.example", 2, 10, -1},
	} {
		addrs, err := sourceAddrs(tc.host, tc.n, tc.conns)
		switch {
		case tc.want < 0 && err == nil:
			t.Errorf("sourceAddrs(%q, %d, %d): no error", tc.host, tc.n, tc.conns)
		case tc.want >= 0 && (err != nil || len(addrs) != tc.want):
			t.Errorf("sourceAddrs(%q, %d, %d) = %v, %v; want %d addresses", tc.host, tc.n, tc.conns, addrs, err, tc.want)
		}
		for i, a := range addrs {
			if !a.IsLoopback() || a.As4()[3] != byte(1+i) {
				t.Errorf("sourceAddrs(%q, %d, %d)[%d] = %v", tc.host, tc.n, tc.conns, i, a)
			}
		}
	}
}

// TestSpreadSourceAddrs checks that the relay sees the streams come from
// several source addresses.
func TestSpreadSourceAddrs(t *testing.T) {
	var mu sync.Mutex
	seen := make(map[string]int)
	url, natsURL := testRelayWith(t, relayOptions{onConn: func(c net.Conn, st http.ConnState) {
		if st != http.StateNew {
			return
		}
		host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
		mu.Lock()
		seen[host]++
		mu.Unlock()
	}})
	rep := runOK(t, Config{URL: url, NATSURL: natsURL, Streams: 12, SourceAddrs: 3, Events: 30, Idle: -1})
	wantCounts(t, "delivery", rep.Delivery.Counts, 30)
	mu.Lock()
	defer mu.Unlock()
	for _, ip := range []string{"127.0.0.1", "127.0.0.2", "127.0.0.3"} {
		if seen[ip] < 4 {
			t.Errorf("connections from %s: %d, want at least 4 (all: %v)", ip, seen[ip], seen)
		}
	}
	if rep.Config.SourceAddrs != 3 {
		t.Errorf("report: %d source addresses", rep.Config.SourceAddrs)
	}
}

// TestIdle checks the idle mode: the relay's CPU over the idle window per
// stream, the keepalives counted, and the streams checked although nothing
// was published.
func TestIdle(t *testing.T) {
	url, natsURL := testRelayWith(t, relayOptions{keepalive: 100 * time.Millisecond})
	rep := runOK(t, Config{URL: url, NATSURL: natsURL, Streams: 10, Idle: 1200 * time.Millisecond})
	id := rep.Idle
	if id == nil || id.Streams != 10 || id.Seconds < 1 || !id.CPU.RelayKnown {
		t.Fatalf("idle: %+v", id)
	}
	// 10 streams × about 12 keepalives each.
	if id.Keepalives < 50 || id.KeepalivesPerStreamSec < 4 {
		t.Errorf("keepalives: %d, %.2f per stream per second", id.Keepalives, id.KeepalivesPerStreamSec)
	}
	if id.CPUPerStreamSecondUs != id.CPU.RelayCPU*1e6/(10*id.Seconds) {
		t.Errorf("CPU per stream second %.3f µs from %.3f s", id.CPUPerStreamSecondUs, id.CPU.RelayCPU)
	}
	d := rep.Delivery
	if d == nil || d.Streams != 10 || d.Dropped != 0 || d.Counts != (tally{}) || rep.Checked.Streams != 10 {
		t.Errorf("idle streams not checked: delivery %+v, checked %+v", d, rep.Checked)
	}
	var sb strings.Builder
	_ = rep.WriteText(&sb)
	for _, want := range []string{"CPU per idle stream", "checked", "OK"} {
		if !strings.Contains(sb.String(), want) {
			t.Errorf("text report has no %q", want)
		}
	}
}

// TestVerdictIdleDrop checks that a stream the relay closed while nothing
// was published fails the run.
func TestVerdictIdleDrop(t *testing.T) {
	r := &runner{}
	rep := &Report{Connect: &connectReport{Requested: 2, Connected: 2}, Delivery: &deliveryReport{Streams: 2, Dropped: 1, Settled: true}}
	r.verdict(rep, t.Context())
	if rep.OK || len(rep.Failures) != 1 || !strings.Contains(rep.Failures[0], "dropped") {
		t.Errorf("verdict: OK %v, failures %v", rep.OK, rep.Failures)
	}
}

func TestFileLimits(t *testing.T) {
	r := &runner{cfg: Config{Streams: 1000}}
	rep := &Report{Machine: machineReport{OpenFiles: 500}}
	if err := r.checkFileLimits(rep); err == nil || !strings.Contains(err.Error(), "ulimit -n") {
		t.Errorf("load tool limit 500 for 1000 streams: %v", err)
	}
	rep = &Report{Machine: machineReport{OpenFiles: 1 << 20}, Relay: relayReport{OpenFilesLimit: "1024"}}
	if err := r.checkFileLimits(rep); err == nil || !strings.Contains(err.Error(), "relay") {
		t.Errorf("relay limit 1024 for 1000 streams: %v", err)
	}
	rep.Relay.OpenFilesLimit = "unlimited"
	if err := r.checkFileLimits(rep); err != nil {
		t.Errorf("enough files: %v", err)
	}
}
