package e2e_test

import (
	"encoding/json"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Node clients: the npm eventsource package (pinned in node/package.json,
// installed by .ci/run with npm ci) and the relay's own client module with
// Node's fetch. Scripts are in node/.

// nodeBin finds node and, when needModules, checks that npm ci ran in node/.
func nodeBin(t *testing.T, needModules bool) string {
	t.Helper()
	node := tool(t, "SSERELAY_NODE", "node")
	if needModules {
		if _, err := os.Stat(filepath.Join("node", "node_modules", "eventsource", "package.json")); err != nil {
			missing(t, "test/node/node_modules missing: run npm ci in test/node")
		}
	}
	return node
}

// servedClient saves the relay's /v1/client.js as an ES module file.
func servedClient(t *testing.T, relayURL string) string {
	t.Helper()
	resp, body := get(t, relayURL+"/v1/client.js", nil)
	if resp.StatusCode != 200 || !strings.Contains(string(body), "export function connect") {
		t.Fatalf("GET /v1/client.js: %d, %d bytes", resp.StatusCode, len(body))
	}
	p := filepath.Join(t.TempDir(), "client.mjs")
	if err := os.WriteFile(p, body, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestNodeClientParser runs the served module's SSE parser through the
// cases of the web-platform-tests format fixtures (node/parser.mjs).
func TestNodeClientParser(t *testing.T) {
	t.Parallel()
	node := nodeBin(t, false)
	r := startRelay(t, relayOpts{})
	mod := servedClient(t, r.URL)
	out, err := exec.Command(node, "node/parser.mjs", mod).CombinedOutput()
	if err != nil {
		t.Fatalf("node parser.mjs: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), " passed, 0 failed") {
		t.Fatalf("node parser.mjs: %s", out)
	}
	t.Logf("%s", out)
}

// nodeLine is one line a node client script prints.
type nodeLine struct {
	Kind  string `json:"kind"`
	ID    string `json:"id"`
	Event string `json:"event"`
	Data  string `json:"data"`
}

func nodeLines(t *testing.T, p *proc) []nodeLine {
	var out []nodeLine
	for _, l := range p.stdout.lines() {
		var nl nodeLine
		if err := json.Unmarshal([]byte(l), &nl); err != nil {
			t.Errorf("node client printed %q: %v", l, err)
			continue
		}
		out = append(out, nl)
	}
	return out
}

// kill9Scenario runs a node client (started by client with the relay's URL)
// across a relay kill -9 and restart on the same port and data dir, and
// checks that it delivered every event exactly once, in order, and nothing
// else: no event without data, no event nobody published.
func kill9Scenario(t *testing.T, client func(relayURL, token string) *proc) {
	const secret = "node-secret"
	dataDir := t.TempDir()
	args := []string{"--retry", "300ms"}
	r := startRelay(t, relayOpts{Secret: secret, DataDir: dataDir, Args: args})
	r.freshStream(t)
	tok := token(t, secret, "alice", "--app", "app", "--publish", "app")
	c := client(r.URL, tok)
	count := func(kind string) int {
		n := 0
		for _, l := range nodeLines(t, c) {
			if l.Kind == kind {
				n++
			}
		}
		return n
	}
	has := func(seq uint64) bool {
		for _, l := range nodeLines(t, c) {
			if l.Kind == "event" && l.ID == strconv.FormatUint(seq, 10) {
				return true
			}
		}
		return false
	}
	wait := func(what string, cond func() bool) {
		t.Helper()
		eventually(t, waitLong, what, func() bool {
			if c.exited() {
				t.Fatalf("node client exited: %v\n%s", c.err, c.stderr.String())
			}
			return cond()
		})
	}
	t.Cleanup(func() {
		t.Logf("node client stdout:\n%s\nstderr:\n%s", c.stdout.String(), c.stderr.String())
	})
	wait("the client's first sserelay.connected", func() bool { return count("sserelay.connected") >= 1 })
	pub := func(event, data string) ev {
		t.Helper()
		body := map[string]any{"app_id": "app", "feed": "alice", "data": data}
		if event != "" {
			body["event"] = event
		}
		return ev{publishHTTP(t, r.URL, tok, body, nil), event, data}
	}
	want := []ev{pub("", "one"), pub("note", "two\nlines"), pub("", "three")}
	wait("the first events", func() bool { return has(want[2].seq) })

	r.kill()
	r = startRelay(t, relayOpts{Secret: secret, DataDir: dataDir, Listen: r.Addr, Args: args})
	want = append(want, pub("", "four")) // replayed or live, depending on when the client is back
	wait("the client to reconnect", func() bool { return count("sserelay.connected") >= 2 })
	want = append(want, pub("note", "five"), pub("", "six"))
	end := pub("", "end")
	wait("the last event", func() bool { return has(end.seq) })

	var got []ev
	for _, l := range nodeLines(t, c) {
		switch {
		case l.Kind == "event":
			seq, err := strconv.ParseUint(l.ID, 10, 64)
			if err != nil {
				t.Errorf("event without a sequence id: %+v", l)
			}
			name := l.Event
			if name == "message" {
				name = ""
			}
			if seq != end.seq {
				got = append(got, ev{seq, name, l.Data})
			}
		case l.Kind == "sserelay.reset":
			t.Errorf("unexpected reset: %+v", l)
		}
	}
	sameEvents(t, "node client", got, want)
	if n := count("sserelay.connected"); n != 2 {
		t.Errorf("%d sserelay.connected, want 2 (one per relay process)", n)
	}
}

// TestNodeEventSourcePackageKill9: npm's eventsource package, the token in
// an Authorization header.
func TestNodeEventSourcePackageKill9(t *testing.T) {
	t.Parallel()
	node := nodeBin(t, true)
	kill9Scenario(t, func(relayURL, tok string) *proc {
		u := relayURL + "/v1/events?" + url.Values{"app_id": {"app"}, "connection_id": {"node-eventsource-1"}}.Encode()
		cmd := exec.Command(node, "node/eventsource-client.mjs", u, tok, "note", "sserelay.connected", "sserelay.reset", "sserelay.token-expired")
		return startProc(t, "node eventsource", cmd)
	})
}

// TestNodeFetchTransportKill9: the served /v1/client.js with transport
// "fetch" under Node (its fetch streams the body).
func TestNodeFetchTransportKill9(t *testing.T) {
	t.Parallel()
	node := nodeBin(t, false)
	var mod string
	kill9Scenario(t, func(relayURL, tok string) *proc {
		mod = servedClient(t, relayURL)
		opts := `{"backoffMin": 100, "backoffMax": 1000, "probeInterval": 1000, "pollInterval": 300}`
		cmd := exec.Command(node, "node/fetch-client.mjs", mod, relayURL+"/v1/events", tok, opts)
		return startProc(t, "node fetch client", cmd)
	})
}

// TestClientTypeDeclarations: /v1/client.d.ts, as served, type-checks a
// program that uses the whole API with TypeScript (pinned in node/), and
// refuses misuse (// @ts-expect-error lines in node/usage.ts).
func TestClientTypeDeclarations(t *testing.T) {
	t.Parallel()
	node := nodeBin(t, true)
	tsc := filepath.Join("node", "node_modules", "typescript", "bin", "tsc")
	if _, err := os.Stat(tsc); err != nil {
		missing(t, "typescript missing: run npm ci in test/node")
	}
	r := startRelay(t, relayOpts{})
	dir := t.TempDir()
	for _, f := range []string{"client.js", "client.d.ts"} {
		resp, body := get(t, r.URL+"/v1/"+f, nil)
		if resp.StatusCode != 200 {
			t.Fatalf("GET /v1/%s: %d %s", f, resp.StatusCode, body)
		}
		if err := os.WriteFile(filepath.Join(dir, f), body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	usage, err := os.ReadFile(filepath.Join("node", "usage.ts"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "usage.ts"), usage, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(node, tsc, "--noEmit", "--strict", "--target", "es2022", "--module", "esnext",
		"--moduleResolution", "bundler", "--lib", "es2022,dom", filepath.Join(dir, "usage.ts")).CombinedOutput()
	if err != nil {
		t.Fatalf("tsc on usage.ts with the served client.d.ts: %v\n%s", err, out)
	}
}
