package cli

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sserelay/sserelay/embedded"
)

// startupGuard bounds how long a failing start-up may take before the test
// calls it a hang. It is a guard, not a measurement (the machine is shared):
// well above the few hundred milliseconds a failed start takes here, well
// below the 30 s wait these failures used to end in.
const startupGuard = 10 * time.Second

// busyPort returns an address on which something listens.
func busyPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String()
}

// runServe runs the built binary's serve with args and returns its exit
// status, its stderr and how long it ran, failing the test if it runs past
// startupGuard.
func runServe(t *testing.T, args ...string) (int, string, time.Duration) {
	t.Helper()
	bin := sserelayBin(t) // built before the clock starts
	ctx, cancel := context.WithTimeout(context.Background(), startupGuard)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"serve", "--jwt-secret", "s"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start)
	if ctx.Err() != nil {
		t.Fatalf("serve %q still running after %v; stderr:\n%s", args, startupGuard, stderr.String())
	}
	code := 0
	if ee, ok := errors.AsType[*exec.ExitError](err); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	t.Logf("serve %q: exit %d after %v", args, code, took.Round(time.Millisecond))
	return code, stderr.String(), took
}

// lastLine is the line main prints for the error that stopped serve.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

func TestServeFailsFast(t *testing.T) {
	busy := busyPort(t)
	notDir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want []string // in the last line of stderr
	}{
		{"busy --listen", []string{"--listen", busy, "--nats-listen", "off"},
			[]string{"--listen " + busy, "in use", "choose another address"}},
		{"busy --nats-listen", []string{"--listen", "127.0.0.1:0", "--nats-listen", busy},
			[]string{"--nats-listen " + busy, "in use", "--nats-listen off", "another address"}},
		{"busy --metrics-listen", []string{"--listen", "127.0.0.1:0", "--nats-listen", "off", "--metrics-listen", busy},
			[]string{"--metrics-listen " + busy}},
		{"data dir under a file", []string{"--listen", "127.0.0.1:0", "--nats-listen", "off", "--data-dir", filepath.Join(notDir, "data")},
			[]string{"--data-dir " + filepath.Join(notDir, "data"), "not a directory"}},
		{"missing certificate", []string{"--listen", "127.0.0.1:0", "--nats-listen", "off", "--tls-cert", notDir + ".pem", "--tls-key", notDir + ".key"},
			[]string{"--tls-cert " + notDir + ".pem", "no such file"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			if !strings.Contains(strings.Join(args, " "), "--data-dir") {
				args = append(args, "--data-dir", t.TempDir())
			}
			code, stderr, _ := runServe(t, args...)
			line := lastLine(stderr)
			if code == 0 {
				t.Errorf("exit 0, want a failure; stderr:\n%s", stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(line, w) {
					t.Errorf("last line %q lacks %q", line, w)
				}
			}
		})
	}

	// A missing key file: the token flags come without the default secret.
	bin := sserelayBin(t)
	ctx, cancel := context.WithTimeout(context.Background(), startupGuard)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "serve", "--jwt-public-key", notDir+".pub", "--listen", "127.0.0.1:0",
		"--nats-listen", "off", "--data-dir", t.TempDir()).CombinedOutput()
	if line := lastLine(string(out)); err == nil || ctx.Err() != nil || !strings.Contains(line, notDir+".pub") || !strings.Contains(line, "no such file") {
		t.Errorf("missing --jwt-public-key: %v, last line %q", err, line)
	}
}

// TestServeSIGTERMDuringStartup: a signal while serve waits at start-up
// (here for a leaf node's hub that accepts connections but never answers)
// stops it at once, as a clean stop.
func TestServeSIGTERMDuringStartup(t *testing.T) {
	hub, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
	var conns sync.WaitGroup
	accepted := make(chan struct{}, 1)
	conns.Go(func() {
		for {
			c, err := hub.Accept()
			if err != nil {
				return
			}
			select {
			case accepted <- struct{}{}:
			default:
			}
			defer c.Close()
		}
	})
	defer conns.Wait()
	defer hub.Close()

	bin := sserelayBin(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*startupGuard)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "serve", "--jwt-secret", "s", "--listen", "127.0.0.1:0", "--nats-listen", "off",
		"--leaf-remote", "nats-leaf://"+hub.Addr().String(), "--js-domain", "hub")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	copied := make(chan struct{})
	go func() { _, _ = io.Copy(&logs, bufio.NewReader(stderr)); close(copied) }()
	select {
	case <-accepted: // the relay is in its start-up wait for the hub
	case <-ctx.Done():
		t.Fatal("the relay never dialled the hub")
	}
	start := time.Now()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-copied:
	case <-time.After(startupGuard):
		t.Fatalf("serve still running %v after SIGTERM", startupGuard)
	}
	err = cmd.Wait()
	t.Logf("exited %v after SIGTERM: %v", time.Since(start).Round(time.Millisecond), err)
	if err != nil {
		t.Errorf("exit: %v, want 0 (a requested stop); stderr:\n%s", err, logs.String())
	}
	if !strings.Contains(logs.String(), "stopped during start-up") {
		t.Errorf("stderr lacks \"stopped during start-up\":\n%s", logs.String())
	}
}

// TestServeDataDirInUse: serve on a --data-dir that a running server holds
// waits for it within --start-timeout, then exits naming the flag and the
// holder, instead of starting a second JetStream server on the same store
// (which acknowledged events with the same sequence numbers and lost some).
func TestServeDataDirInUse(t *testing.T) {
	dir := t.TempDir()
	holder, err := embedded.Start(context.Background(), embedded.Options{StoreDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Shutdown()
	code, stderr, _ := runServe(t, "--listen", "127.0.0.1:0", "--nats-listen", "off", "--data-dir", dir, "--start-timeout", "1s")
	line := lastLine(stderr)
	if code == 0 {
		t.Fatalf("exit 0, want a failure; stderr:\n%s", stderr)
	}
	for _, w := range []string{"--data-dir " + dir, "in use", "pid " + strconv.Itoa(os.Getpid())} {
		if !strings.Contains(line, w) {
			t.Errorf("last line %q lacks %q", line, w)
		}
	}
}
