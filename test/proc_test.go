package e2e_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// logBuf collects a process's output; safe for concurrent use.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// lines returns the complete lines written so far.
func (l *logBuf) lines() []string {
	s := l.String()
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return strings.Split(s[:i], "\n")
	}
	return nil
}

// proc is a child process in its own process group, killed at cleanup.
type proc struct {
	name   string
	cmd    *exec.Cmd
	stdout *logBuf
	stderr *logBuf
	done   chan struct{}
	err    error // from Wait, valid after done
}

// startProc starts cmd in its own process group. At cleanup the group is
// killed (SIGKILL), and on failure the output is logged. A data race
// reported by a race-enabled child fails the test.
func startProc(t *testing.T, name string, cmd *exec.Cmd) *proc {
	t.Helper()
	p := &proc{name: name, cmd: cmd, stdout: &logBuf{}, stderr: &logBuf{}, done: make(chan struct{})}
	if cmd.Stdout == nil {
		cmd.Stdout = p.stdout
	}
	if cmd.Stderr == nil {
		cmd.Stderr = p.stderr
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.kill()
		if strings.Contains(p.stderr.String(), "WARNING: DATA RACE") {
			t.Errorf("%s reported a data race (see its output below)", name)
		}
		if t.Failed() {
			t.Logf("---- %s (%s) stdout:\n%s\n---- %s stderr:\n%s", name, strings.Join(cmd.Args, " "), tail(p.stdout.String()), name, tail(p.stderr.String()))
		}
	})
	return p
}

func tail(s string) string {
	const max = 64 << 10
	if len(s) > max {
		return "…" + s[len(s)-max:]
	}
	return s
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL to the process group and waits for the process.
func (p *proc) kill() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	select {
	case <-p.done:
	case <-time.After(waitShort):
	}
}

// signal sends sig to the process itself (not the group).
func (p *proc) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %s to %s: %v", sig, p.name, err)
	}
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		t.Fatalf("%s did not exit within %s", p.name, timeout)
	}
	var ee *exec.ExitError
	switch {
	case p.err == nil:
		return 0
	case errors.As(p.err, &ee):
		return ee.ExitCode()
	default:
		t.Fatalf("%s: %v", p.name, p.err)
		return -1
	}
}

// jsonLines returns the JSON log lines of stderr whose "msg" is msg.
func (p *proc) jsonLines(msg string) []map[string]any {
	var out []map[string]any
	for _, l := range p.stderr.lines() {
		if !strings.HasPrefix(l, "{") {
			continue
		}
		var m map[string]any
		d := json.NewDecoder(strings.NewReader(l))
		d.UseNumber() // sequences can exceed float64's exact integers
		if d.Decode(&m) == nil && m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// waitJSON waits for a JSON log line with msg for which match (nil: any)
// returns true, and returns it. It fails at once if the process exits.
func (p *proc) waitJSON(t *testing.T, msg string, match func(map[string]any) bool) map[string]any {
	t.Helper()
	var found map[string]any
	eventually(t, waitLong, fmt.Sprintf("%s to log %q", p.name, msg), func() bool {
		for _, m := range p.jsonLines(msg) {
			if match == nil || match(m) {
				found = m
				return true
			}
		}
		if p.exited() {
			t.Fatalf("%s exited (%v) before logging %q", p.name, p.err, msg)
		}
		return false
	})
	return found
}

// runCmd runs a short command and returns its trimmed stdout; it fails the
// test with the output on a non-zero exit.
func runCmd(t *testing.T, stdin string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	// A race-enabled binary sleeps 1 s at exit by default (GORACE
	// atexit_sleep_ms): pointless for one-shot commands.
	cmd.Env = cleanEnv(append([]string{"GORACE=atexit_sleep_ms=0"}, env...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%s %s: %v\nstdout: %s\nstderr: %s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
		}
	case <-time.After(waitLong):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("%s %s: no exit within %s\nstderr: %s", name, strings.Join(args, " "), waitLong, stderr.String())
	}
	return strings.TrimSpace(stdout.String())
}

func mustUint(t *testing.T, s string) uint64 {
	t.Helper()
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 64)
	if err != nil {
		t.Fatalf("not a sequence: %q", s)
	}
	return n
}

func num(v any) uint64 {
	switch x := v.(type) {
	case json.Number:
		n, _ := strconv.ParseUint(x.String(), 10, 64)
		return n
	case float64:
		return uint64(x)
	case string:
		n, _ := strconv.ParseUint(x, 10, 64)
		return n
	}
	return 0
}

func fmtSeqs(seqs []uint64) string {
	var b strings.Builder
	for i, s := range seqs {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprint(&b, s)
	}
	return b.String()
}

// cleanEnv is the test's environment without SSERELAY_* variables (they
// would change the relay's flags), plus extra.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SSERELAY_") {
			env = append(env, kv)
		}
	}
	return append(env, extra...)
}
