package bench

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sserelay/sserelay/test/testkit"
)

// bins holds the binaries built for this run (the relay, for Spawn).
var bins *testkit.Binaries

func TestMain(m *testing.M) { os.Exit(testkit.RunTests(m, &bins)) }

func sserelayBin(t *testing.T) string { return bins.Relay(t) }

// serveStartLines are what `sserelay serve --listen 127.0.0.1:0
// --nats-listen 127.0.0.1:0 --log-format json --log-level info` wrote up to
// the point where it was ready, verbatim.
const serveStartLines = `{"time":"2026-12-02T07:07:11.716344059Z","level":"INFO","msg":"embedded NATS started","data_dir":"/tmp/tmp.GDvqkj4Aco/data","client_url":"nats://127.0.0.1:41083"}
{"time":"2026-12-02T07:07:11.725427144Z","level":"INFO","msg":"stream ready","stream":"SSE","subjects":["sse.>"],"first_seq":1796195231717263,"last_seq":1796195231717262,"max_age":86400000000000}
{"time":"2026-12-02T07:07:11.728900462Z","level":"INFO","msg":"relay started","stream":"SSE","cursor":1796195231717262,"first_seq":1796195231717263}
{"time":"2026-12-02T07:07:11.728962362Z","level":"INFO","msg":"connection limit","addr":"127.0.0.1:45241","max_connections":19744}
{"time":"2026-12-02T07:07:11.729016262Z","level":"INFO","msg":"sserelay listening","addr":"127.0.0.1:45241","scheme":"http","version":"dev"}
`

// serveStopLines follow serveStartLines after SIGTERM.
const serveStopLines = `{"time":"2026-12-02T07:07:13.686261481Z","level":"INFO","msg":"shutting down","drain_timeout":5000000000}
{"time":"2026-12-02T07:07:13.686582709Z","level":"INFO","msg":"draining","open_streams":0}
{"time":"2026-12-02T07:07:13.750904413Z","level":"INFO","msg":"stopped"}
`

// serveFailedLines are what serve wrote (stderr and log together) when its
// --nats-listen port was taken: it exited before listening.
const serveFailedLines = `{"time":"2026-12-02T07:07:58.408535832Z","level":"ERROR","msg":"Error listening on port: 127.0.0.1:53159, \"listen tcp 127.0.0.1:53159: bind: address already in use\"","component":"nats"}
{"time":"2026-12-02T07:07:58.426284131Z","level":"ERROR","msg":"sserelay stopped","err":"--nats-listen 127.0.0.1:53159: the address is in use (another NATS server or relay?): set --nats-listen off if no outside publisher needs it (the relay itself does not), or another address (embedded: cannot listen on 127.0.0.1:53159: Error listening on port: 127.0.0.1:53159, \"listen tcp 127.0.0.1:53159: bind: address already in use\")"}
sserelay: --nats-listen 127.0.0.1:53159: the address is in use (another NATS server or relay?): set --nats-listen off if no outside publisher needs it (the relay itself does not), or another address (embedded: cannot listen on 127.0.0.1:53159: Error listening on port: 127.0.0.1:53159, "listen tcp 127.0.0.1:53159: bind: address already in use")
`

// TestStartLog feeds real serve output in chunks that end anywhere: the
// addresses are the ones the relay logged, and the HTTP one is known only
// once its line is complete.
func TestStartLog(t *testing.T) {
	const wantURL, wantNATS = "http://127.0.0.1:45241", "nats://127.0.0.1:41083"
	// Output that is not a log line comes first: a line of another program,
	// and one longer than startLog keeps.
	noise := "not json {\n" + `{"pad":"` + strings.Repeat("x", maxLogLine) + `","msg":"sserelay listening","addr":"127.0.0.1:1"}` + "\n"
	log := noise + serveStartLines + serveStopLines
	for _, step := range []int{1, 2, 3, 7, 64, 4096, len(log)} {
		var l startLog
		for i := 0; i < len(log); i += step {
			chunk := log[i:min(i+step, len(log))]
			before := i+len(chunk) < len(noise)+len(serveStartLines)
			l.write([]byte(chunk))
			if before && l.url != "" {
				t.Fatalf("step %d: url %q after %d bytes, before the listening line ended", step, l.url, i+len(chunk))
			}
		}
		if l.url != wantURL || l.natsURL != wantNATS {
			t.Errorf("step %d: url %q, nats %q; want %q, %q", step, l.url, l.natsURL, wantURL, wantNATS)
		}
		if len(l.partial) != 0 {
			t.Errorf("step %d: partial line of %d bytes left", step, len(l.partial))
		}
	}

	// Output without a newline does not make the parser grow.
	var l startLog
	chunk := bytes.Repeat([]byte("y"), 4096)
	for range 10 * maxLogLine / len(chunk) {
		l.write(chunk)
	}
	if cap(l.partial) > 2*maxLogLine {
		t.Errorf("%d bytes without a newline kept in %d", 10*maxLogLine, cap(l.partial))
	}
	l.write([]byte("\n" + serveStartLines))
	if l.url != wantURL {
		t.Errorf("after a long line: url %q", l.url)
	}

	// The listening line without its newline: the line may still grow.
	l = startLog{}
	l.write([]byte(strings.TrimSuffix(serveStartLines, "\n")))
	if l.url != "" || l.natsURL != wantNATS {
		t.Errorf("unfinished listening line: url %q, nats %q", l.url, l.natsURL)
	}
	l.write([]byte("\n"))
	if l.url != wantURL {
		t.Errorf("listening line finished: url %q", l.url)
	}

	// A relay that failed before listening.
	l = startLog{}
	l.write([]byte(serveFailedLines))
	if l.url != "" || l.natsURL != "" {
		t.Errorf("failed start-up: url %q, nats %q, want none", l.url, l.natsURL)
	}

	// An outside NATS server (--serve-arg=--nats-url): no embedded line.
	l = startLog{}
	l.write([]byte(`{"level":"INFO","msg":"NATS connected","url":"nats://127.0.0.1:4222","servers":"nats://127.0.0.1:4222"}` + "\n" +
		`{"level":"INFO","msg":"sserelay listening","addr":"127.0.0.1:8443","scheme":"https","version":"dev"}` + "\n"))
	if l.url != "https://127.0.0.1:8443" || l.natsURL != "nats://127.0.0.1:4222" {
		t.Errorf("outside NATS: url %q, nats %q", l.url, l.natsURL)
	}
}

// TestWarnings: what Stop reports of a relay logging at info is its
// warnings, errors and anything that is no JSON log line.
func TestWarnings(t *testing.T) {
	warn := `{"time":"2026-12-02T07:07:12Z","level":"WARN","msg":"NATS disconnected","err":"EOF"}` + "\n"
	raised := `{"time":"2026-12-02T07:07:12Z","level":"INFO+4","msg":"custom"}` + "\n"
	panicLines := "panic: boom\n\ngoroutine 1 [running]:\n"
	log := serveStartLines + warn + raised + panicLines + serveFailedLines + serveStopLines
	want := warn + raised + panicLines + serveFailedLines
	if got := string(warnings([]byte(log))); got != want {
		t.Errorf("warnings:\n%s\nwant:\n%s", got, want)
	}
	if got := warnings([]byte(serveStartLines + serveStopLines)); len(got) != 0 {
		t.Errorf("a clean run has warnings: %s", got)
	}
}

// TestSpawnPortsFromChild spawns two relays at once: each is told port 0
// for HTTP and NATS, and Spawn hands out the distinct ports each bound,
// where each answers.
func TestSpawnPortsFromChild(t *testing.T) {
	exe := sserelayBin(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var (
		wg      sync.WaitGroup
		spawned [2]*Spawned
		errs    [2]error
	)
	for i := range spawned {
		wg.Go(func() {
			spawned[i], errs[i] = Spawn(ctx, SpawnOptions{Exe: exe, Secret: testSecret, Logf: t.Logf})
		})
	}
	wg.Wait()
	for i, s := range spawned {
		if s != nil {
			t.Cleanup(func() { s.Stop() })
		}
		if errs[i] != nil {
			t.Fatalf("relay %d: %v", i, errs[i])
		}
	}

	seen := map[string]int{}
	servers := map[string]int{}
	for i, s := range spawned {
		// No port was chosen for the relay: it was told port 0.
		args := procArgs(t, s.PID)
		if got := lastValue(args, "--listen"); got != "127.0.0.1:0" {
			t.Errorf("relay %d: --listen %q, want 127.0.0.1:0 (args %q)", i, got, args)
		}
		if got := lastValue(args, "--nats-listen"); got != "127.0.0.1:0" {
			t.Errorf("relay %d: --nats-listen %q, want 127.0.0.1:0 (args %q)", i, got, args)
		}
		for _, u := range []string{s.URL, s.NATSURL} {
			pu, err := url.Parse(u)
			if err != nil || pu.Hostname() != "127.0.0.1" || pu.Port() == "" || pu.Port() == "0" {
				t.Fatalf("relay %d: address %q: want a loopback host and a bound port", i, u)
			}
			if j, ok := seen[pu.Host]; ok {
				t.Errorf("relays %d and %d both got %s", j, i, pu.Host)
			}
			seen[pu.Host] = i
		}
		resp, err := http.Get(s.URL + "/readyz")
		if err != nil {
			t.Fatalf("relay %d: %v", i, err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("relay %d: /readyz %s", i, resp.Status)
		}
		// NATSURL is this relay's embedded server, with the relay's stream.
		nc, err := nats.Connect(s.NATSURL)
		if err != nil {
			t.Fatalf("relay %d: %v", i, err)
		}
		servers[nc.ConnectedServerId()] = i
		js, err := jetstream.New(nc)
		if err == nil {
			_, err = js.Stream(ctx, "SSE")
		}
		nc.Close()
		if err != nil {
			t.Errorf("relay %d: stream SSE at %s: %v", i, s.NATSURL, err)
		}
	}
	if len(servers) != 2 {
		t.Errorf("both NATS URLs reach the same server: %v", servers)
	}

	// The bench runs against what Spawn handed out.
	s := spawned[0]
	rep, err := Run(ctx, Config{URL: s.URL, NATSURL: s.NATSURL, RelayPID: s.PID, Secret: testSecret, Logf: t.Logf,
		Streams: 5, Events: 50, Rate: 500, Idle: -1})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK {
		t.Errorf("run against the spawned relay failed: %v", rep.Failures)
	}
	wantCounts(t, "delivery", rep.Delivery.Counts, 50)

	// The log holds the info lines Spawn read; Stop reports none of them.
	for i, s := range spawned {
		b, err := os.ReadFile(filepath.Join(s.dir, "relay.log"))
		if err != nil || !bytes.Contains(b, []byte(msgListening)) {
			t.Fatalf("relay %d: log without %q (%v): %s", i, msgListening, err, b)
		}
		if w := s.Stop(); w != "" {
			t.Errorf("relay %d: Stop reports a clean run's log:\n%s", i, w)
		}
	}
}

// TestSpawnExitsEarly: a relay that exits before it listens fails Spawn at
// once with its own error, not after the start-up timeout.
func TestSpawnExitsEarly(t *testing.T) {
	exe := sserelayBin(t)
	busy, err := net.Listen("tcp", "127.0.0.1:0") // held: the relay cannot have it
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"before logging", []string{"--no-such-flag"}, "no-such-flag"},
		{"after logging", []string{"--nats-listen", busy.Addr().String()}, "--nats-listen " + busy.Addr().String() + ": the address is in use"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Well below the start-up timeout: a Spawn that waits for it
			// fails with this context's error instead.
			ctx, cancel := context.WithTimeout(context.Background(), startupTimeout/2)
			defer cancel()
			s, err := Spawn(ctx, SpawnOptions{Exe: exe, Secret: testSecret, Args: tc.args, Logf: t.Logf})
			if s != nil {
				s.Stop()
				t.Fatalf("Spawn started a relay at %s", s.URL)
			}
			if err == nil || !strings.Contains(err.Error(), "relay exited during start-up") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Spawn: %v; want the exit during start-up with %q", err, tc.want)
			}
		})
	}
}

// procArgs is the command line of a running process.
func procArgs(t *testing.T, pid int) []string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
}

// lastValue is the value of the last "--name value" or "--name=value" in
// args: the one the flag parser keeps.
func lastValue(args []string, name string) string {
	v := ""
	for i, a := range args {
		if a == name && i+1 < len(args) {
			v = args[i+1]
		} else if after, ok := strings.CutPrefix(a, name+"="); ok {
			v = after
		}
	}
	return v
}
