package relay

import (
	"bytes"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestAcceptOutOfFilesLogged runs a listener of the relay in a child
// process whose open-files limit leaves room for a few connections, dials
// more from this process, and checks that the child logged running out of
// file descriptors at error level (net/http alone logs it to ErrorLog).
func TestAcceptOutOfFilesLogged(t *testing.T) {
	if os.Getenv("RELAY_EMFILE_CHILD") != "" {
		emfileChild()
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestAcceptOutOfFilesLogged$")
	cmd.Env = append(os.Environ(), "RELAY_EMFILE_CHILD=1")
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	outR, outW, _ := os.Pipe()
	cmd.ExtraFiles = []*os.File{outW} // fd 3: the child's address
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	outW.Close()
	defer func() { stdin.Close(); _ = cmd.Wait() }()
	buf := make([]byte, 64)
	_ = outR.SetReadDeadline(time.Now().Add(20 * time.Second))
	n, err := outR.Read(buf)
	if err != nil {
		t.Fatalf("child address: %v (output %s)", err, out.String())
	}
	addr := strings.TrimSpace(string(buf[:n]))
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < 20; i++ {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	deadline := time.Now().Add(20 * time.Second)
	for !strings.Contains(out.String(), "level=ERROR") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(out.String(), "level=ERROR msg=\"out of file descriptors") || !strings.Contains(out.String(), "too many open files") {
		t.Fatalf("no error-level log of EMFILE; child output:\n%s", out.String())
	}
}

// emfileChild accepts on a limited listener with an open-files limit of
// what it holds plus 4, until its stdin closes.
func emfileChild() {
	r := &Relay{cfg: Config{MaxConnections: -1}, log: slog.New(slog.NewTextHandler(os.Stderr, nil)), metrics: newMetrics()}
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	ln := r.Listener(raw)
	addrFile := os.NewFile(3, "addr")
	fds, _ := os.ReadDir("/proc/self/fd")
	lim := syscall.Rlimit{Cur: uint64(len(fds) + 4), Max: uint64(len(fds) + 4)}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		panic(err)
	}
	_, _ = addrFile.WriteString(raw.Addr().String() + "\n")
	addrFile.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				time.Sleep(5 * time.Millisecond) // as net/http backs off
				continue
			}
			_ = c // held: the limit is reached
		}
	}()
	_, _ = os.Stdin.Read(make([]byte, 1)) // until the parent closes it
	os.Exit(0)                            // the accept loop is still running
}

// syncBuffer is a bytes.Buffer that a child's output can write while the
// test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
