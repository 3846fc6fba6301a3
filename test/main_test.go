// Package e2e_test runs the built sserelay binary as a separate process
// against real NATS servers and real clients (curl, the nats CLI, headless
// Chromium, and raw Go HTTP clients for exact bytes).
//
// Run from the repository root: go test -race -count=1 ./test/
//
// External tools: curl, nats (natscli; env SSERELAY_NATS_CLI or PATH) and
// chromium (env SSERELAY_CHROMIUM or /usr/bin/chromium or PATH). A test
// that needs a missing tool is skipped, or fails when env CI is set.
//
// Shared helpers, by file: main_test.go (binaries, tools, deadlines,
// eventually), proc_test.go (child processes), relay_test.go (relay and
// nats-server processes, tokens, publishing), http_test.go (HTTP client,
// error answers, metrics), sse_test.go (the SSE client and expected frames).
package e2e_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/sserelay/sserelay/test/testkit"
)

const module = "github.com/sserelay/sserelay"

var (
	bins     *testkit.Binaries // what this run built
	relayBin string            // the sserelay binary
)

// Generous deadlines: the relay runs with the race detector on 2 cores.
const (
	waitLong  = 30 * time.Second
	waitShort = 15 * time.Second
)

// eventually polls cond every 10 ms until it is true or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	b, err := testkit.NewBinaries()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	bins = b
	defer bins.Remove()
	// The relay is built with the race detector when the tests are: a data
	// race in the relay process then shows up on its stderr, which every
	// test checks.
	var flags []string
	if raceEnabled {
		flags = append(flags, "-race")
	}
	if relayBin, err = bins.Make("sserelay", module+"/cli/sserelay", flags...); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	return m.Run()
}

// natsServer builds nats-server from the module's own dependency (same
// version as the embedded one) once per run and returns its path.
func natsServer(t *testing.T) string {
	t.Helper()
	return bins.Build(t, "nats-server", "github.com/nats-io/nats-server/v2")
}

// tool finds an external program: the environment variable env (if set),
// then the candidates (absolute paths or names on PATH). A missing tool
// skips the test, or fails it when CI is set.
func tool(t *testing.T, env string, candidates ...string) string {
	t.Helper()
	if env != "" {
		if p := os.Getenv(env); p != "" {
			if _, err := os.Stat(p); err == nil {
				return p
			}
			missing(t, fmt.Sprintf("$%s=%s does not exist", env, p))
		}
	}
	for _, c := range candidates {
		if filepath.IsAbs(c) {
			if _, err := os.Stat(c); err == nil {
				return c
			}
			continue
		}
		if p, err := exec.LookPath(c); err == nil {
			return p
		}
	}
	hint := fmt.Sprintf("%v", candidates)
	if env != "" {
		hint += " (or set $" + env + ")"
	}
	missing(t, "tool not found: "+hint)
	return ""
}

func missing(t *testing.T, msg string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg + "; skipping (set CI=1 to make this a failure)")
}
