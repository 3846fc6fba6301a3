package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
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
// server on loopback ports it chose itself and a temporary data directory.
type Spawned struct {
	URL     string // http://127.0.0.1:PORT, as the relay logged it
	NATSURL string // nats://127.0.0.1:PORT, as the relay logged it
	PID     int
	dir     string // data directory and log file
	cmd     *exec.Cmd
	exited  chan struct{}
	waitErr error
}

// startupTimeout bounds Spawn: JetStream may recover a store first, and the
// machine may be busy.
const startupTimeout = 60 * time.Second

// Spawn starts `Exe serve` and waits until it is ready. The relay binds
// port 0 for HTTP and for NATS and Spawn reads the ports it got from its
// log: a port picked here and handed over would be free only until
// something else (another relay, one of the bench's own outgoing
// connections) took it. The child inherits this process's open-files limit
// (see RaiseFileLimit) and is killed if this process dies.
func Spawn(ctx context.Context, o SpawnOptions) (*Spawned, error) {
	logf := o.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	dir, err := os.MkdirTemp("", "sserelay-bench-")
	if err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, "relay.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	defer logFile.Close()
	logReader, err := os.Open(logPath)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	defer logReader.Close()
	args := []string{"serve",
		"--listen", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0",
		"--data-dir", filepath.Join(dir, "data"),
		// Info, for the lines with the addresses; Stop reports only
		// warnings and errors.
		"--log-level", "info", "--no-demo",
		// The bench is one client address and one publishing token by
		// design: it measures the relay, not its per-address and per-token
		// limits (Args can set them again).
		"--ip-stream-rate=-1", "--publish-rate=-1",
	}
	// Args may change anything but the log's format, which Spawn reads.
	args = append(append(args, o.Args...), "--log-format", "json")
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
	s := &Spawned{PID: cmd.Process.Pid, dir: dir, cmd: cmd, exited: make(chan struct{})}
	go func() { s.waitErr = cmd.Wait(); close(s.exited) }()
	logf("spawned relay pid %d, data %s", s.PID, dir)
	var sl startLog
	buf := make([]byte, 32<<10)
	client := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(startupTimeout)
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
		if err := sl.readFrom(logReader, buf); err != nil {
			s.Stop()
			return nil, fmt.Errorf("read the relay's log: %w", err)
		}
		if sl.url != "" && s.URL == "" {
			if sl.natsURL == "" {
				s.Stop()
				return nil, fmt.Errorf("relay logged %q but no NATS client address (is its --nats-listen off?)", msgListening)
			}
			s.URL, s.NATSURL = sl.url, sl.natsURL
			logf("relay pid %d on %s, NATS %s", s.PID, s.URL, s.NATSURL)
		}
		if s.URL != "" {
			if resp, err := client.Get(s.URL + "/readyz"); err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return s, nil
				}
			}
		}
		if time.Now().After(deadline) {
			what := "not ready"
			if s.URL == "" {
				what = fmt.Sprintf("logged no %q line (is its --log-level above info?)", msgListening)
			}
			t := tail(logPath)
			s.Stop()
			return nil, fmt.Errorf("relay %s after %v: %s", what, startupTimeout, t)
		}
	}
}

// What `serve` logs at Info once it has bound its ports: the embedded
// server's line (with its client_url) comes first, the HTTP one (with addr)
// last, when the relay is about to be ready.
const (
	msgEmbedded  = "embedded NATS started"
	msgConnected = "NATS connected" // an outside server (--nats-url in Args)
	msgListening = "sserelay listening"
)

// maxLogLine bounds the lines startLog reads: the relay's JSON lines are
// short, and output that is no such line must not make it grow.
const maxLogLine = 64 << 10

// startLog reads a spawned relay's JSON log, in chunks that may end
// anywhere, for the addresses the relay bound.
type startLog struct {
	partial []byte // the line read so far, without its newline
	skip    bool   // the current line outgrew maxLogLine: drop it
	natsURL string // the NATS client URL the relay logged
	url     string // http(s)://addr from msgListening; set last
}

// readFrom feeds what r has now (up to EOF), using buf.
func (l *startLog) readFrom(r io.Reader, buf []byte) error {
	for {
		n, err := r.Read(buf)
		l.write(buf[:n])
		if errors.Is(err, io.EOF) || (n == 0 && err == nil) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// write feeds the next chunk of the log.
func (l *startLog) write(p []byte) {
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			if !l.skip {
				l.partial = append(l.partial, p...)
			}
			if len(l.partial) > maxLogLine {
				l.partial, l.skip = l.partial[:0], true
			}
			return
		}
		if line := p[:i]; !l.skip && len(l.partial)+len(line) <= maxLogLine {
			if len(l.partial) > 0 {
				line = append(l.partial, line...)
			}
			l.line(line)
		}
		l.partial, l.skip = l.partial[:0], false
		p = p[i+1:]
	}
}

// line reads one log line; other output (not JSON, other messages) is
// ignored.
func (l *startLog) line(b []byte) {
	var m struct {
		Msg       string `json:"msg"`
		Addr      string `json:"addr"`
		Scheme    string `json:"scheme"`
		ClientURL string `json:"client_url"`
		URL       string `json:"url"`
	}
	if json.Unmarshal(b, &m) != nil {
		return
	}
	switch m.Msg {
	case msgEmbedded:
		l.natsURL = m.ClientURL
	case msgConnected:
		l.natsURL = m.URL
	case msgListening:
		if m.Addr == "" {
			return
		}
		if m.Scheme == "" {
			m.Scheme = "http"
		}
		l.url = m.Scheme + "://" + m.Addr
	}
}

// Stop sends SIGTERM, waits for the relay to drain and exit (killing it
// after 20 s), and removes its directory. It returns the log's tail if the
// relay logged warnings or errors, or wrote anything that is not a JSON log
// line (a panic, a race report); its info lines are left out.
func (s *Spawned) Stop() string {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(20 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
	b, _ := os.ReadFile(filepath.Join(s.dir, "relay.log"))
	os.RemoveAll(s.dir)
	return lastBytes(warnings(b))
}

// warnings returns the lines of log that are not JSON lines below
// slog.LevelWarn.
func warnings(log []byte) []byte {
	var out []byte
	for line := range bytes.Lines(log) {
		var m struct {
			Level *slog.Level `json:"level"`
		}
		if json.Unmarshal(line, &m) == nil && m.Level != nil && *m.Level < slog.LevelWarn {
			continue
		}
		out = append(out, line...)
	}
	return out
}

// tail returns the end of a log file.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return lastBytes(b)
}

// lastBytes returns the last 2000 bytes of b, trimmed, as a string.
func lastBytes(b []byte) string {
	b = bytes.TrimSpace(b)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}
