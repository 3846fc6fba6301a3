package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// SpawnOptions describe a relay started as a child process.
type SpawnOptions struct {
	// Exe is the sserelay executable; it is run as "Exe serve …".
	Exe string
	// Secret is the HS256 secret the relay verifies tokens with.
	Secret []byte
	// Args are extra flags for serve (e.g. "--queue-events=1024").
	Args []string
	// Logf receives progress lines (nil: none).
	Logf func(format string, args ...any)
}

// Spawned is a relay running as a child process with an embedded NATS
// server on free loopback ports and a temporary data directory.
type Spawned struct {
	URL     string // http://127.0.0.1:PORT
	NATSURL string // nats://127.0.0.1:PORT
	PID     int
	dir     string // data directory and log file
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
}

// Spawn starts `Exe serve` and waits until it is ready. The child inherits
// this process's open-files limit (see RaiseFileLimit) and is killed if this
// process dies.
func Spawn(ctx context.Context, o SpawnOptions) (*Spawned, error) {
	logf := o.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	dir, err := os.MkdirTemp("", "sserelay-bench-")
	if err != nil {
		return nil, err
	}
	httpPort, err1 := freePort()
	natsPort, err2 := freePort()
	if err := errors.Join(err1, err2); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	logPath := filepath.Join(dir, "relay.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	defer logFile.Close()
	args := []string{"serve",
		"--listen", "127.0.0.1:" + strconv.Itoa(httpPort),
		"--nats-listen", "127.0.0.1:" + strconv.Itoa(natsPort),
		"--data-dir", filepath.Join(dir, "data"),
		"--log-format", "json", "--log-level", "warn", "--no-demo",
		// The bench is one client address and one publishing token by
		// design: it measures the relay, not its per-address and per-token
		// limits (Args can set them again).
		"--ip-stream-rate=-1", "--publish-rate=-1",
	}
	args = append(args, o.Args...)
	cmd := exec.Command(o.Exe, args...)
	// The secret goes through the environment, not the command line (ps shows
	// that); other SSERELAY_ variables of this process are not passed on: they
	// are the bench's flags and would change the relay's.
	env := []string{"SSERELAY_JWT_SECRET=" + string(o.Secret)}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SSERELAY_") {
			env = append(env, kv)
		}
	}
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("start %s: %w", o.Exe, err)
	}
	s := &Spawned{
		URL: "http://127.0.0.1:" + strconv.Itoa(httpPort), NATSURL: "nats://127.0.0.1:" + strconv.Itoa(natsPort),
		PID: cmd.Process.Pid, dir: dir, cmd: cmd, exited: make(chan struct{}),
	}
	go func() { s.waitErr = cmd.Wait(); close(s.exited) }()
	logf("spawned relay pid %d on %s, NATS %s, data %s", s.PID, s.URL, s.NATSURL, dir)
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-s.exited:
			err := fmt.Errorf("relay exited during start-up (%v): %s", s.waitErr, tail(logPath))
			os.RemoveAll(dir)
			return nil, err
		case <-ctx.Done():
			s.Stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if resp, err := http.Get(s.URL + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s, nil
			}
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("relay not ready after 60 s: %s", tail(logPath))
		}
	}
}

// Stop sends SIGTERM, waits for the relay to drain and exit (killing it
// after 20 s), and removes its directory. It returns the log's tail if the
// relay logged warnings.
func (s *Spawned) Stop() string {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(20 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	t := tail(filepath.Join(s.dir, "relay.log"))
	os.RemoveAll(s.dir)
	return t
}

// tail returns the end of a log file.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	b = bytes.TrimSpace(b)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// freePort asks the kernel for a free loopback port. Another process could
// take it before the relay binds it; the relay would then fail to start and
// say so.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}
