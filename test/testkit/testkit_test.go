package testkit

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestPKIHandshake: the server certificate is trusted through the CA, and
// the server accepts the client certificate and nothing else.
func TestPKIHandshake(t *testing.T) {
	p := NewPKI(t, t.TempDir())
	serverPair, err := tls.LoadX509KeyPair(p.ServerCert, p.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	clientPair, err := tls.LoadX509KeyPair(p.ClientCert, p.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{serverPair}, ClientCAs: p.Pool, ClientAuth: tls.RequireAndVerifyClientCert,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	dial := func(certs []tls.Certificate) error {
		c, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{RootCAs: p.Pool, Certificates: certs, ServerName: "localhost"})
		if err != nil {
			return err
		}
		defer c.Close()
		// TLS 1.3: a refused client certificate shows at the first read.
		_, err = c.Read(make([]byte, 1))
		return err
	}
	if err := dial([]tls.Certificate{clientPair}); !errors.Is(err, io.EOF) {
		t.Fatalf("with the client certificate: %v, want the server's close (EOF)", err)
	}
	if err := dial(nil); err == nil || !strings.Contains(err.Error(), "certificate required") {
		t.Fatalf("without a client certificate: %v, want the server's refusal", err)
	}
	ln.Close()
	<-done
}

func TestWriteSelfSigned(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	first := WriteSelfSigned(t, certFile, keyFile, "first")
	second := WriteSelfSigned(t, certFile, keyFile, "second")
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if leaf.SerialNumber.Cmp(second.SerialNumber) != 0 || leaf.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatalf("files hold serial %v, want the second's %v", leaf.SerialNumber, second.SerialNumber)
	}
	if err := leaf.VerifyHostname("127.0.0.1"); err != nil {
		t.Fatal(err)
	}
}

// TestFreePort: the port is free, below the kernel's ephemeral range (where
// any outgoing connection could take it before it is bound), and never
// handed out twice in one process, even while the first is not bound yet.
func TestFreePort(t *testing.T) {
	ln, err := net.Listen("tcp", FreeAddr(t))
	if err != nil {
		t.Fatalf("FreeAddr gave a busy address: %v", err)
	}
	ln.Close()
	_, hi := freeRange()
	seen := map[int]bool{}
	for range 200 {
		p := FreePort(t)
		if p < 1024 || p >= hi {
			t.Fatalf("FreePort = %d, want it in [1024, %d): below the ephemeral range", p, hi)
		}
		if seen[p] {
			t.Fatalf("FreePort gave %d twice", p)
		}
		seen[p] = true
	}
}

// TestBinariesOnce: a program is built once per name, a failed build
// fails every ask, and Remove takes the directory away.
func TestBinariesOnce(t *testing.T) {
	src := t.TempDir()
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(src, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("go.mod", "module hello\n\ngo 1.22\n")
	write("main.go", "package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Print(\"hello\") }\n")
	b, err := NewBinaries()
	if err != nil {
		t.Fatal(err)
	}
	t.Chdir(src)
	first := b.Build(t, "hello", ".")
	if err := os.Remove(filepath.Join(src, "main.go")); err != nil {
		t.Fatal(err)
	}
	if again := b.Build(t, "hello", "."); again != first {
		t.Fatalf("second Build = %q, want the first's %q", again, first)
	}
	out, err := exec.Command(first).Output()
	if err != nil || string(out) != "hello" {
		t.Fatalf("built program: %q, %v", out, err)
	}
	if _, err := b.Make("broken", "."); err == nil {
		t.Fatal("a package without sources built")
	}
	if err := b.Remove(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(first); !os.IsNotExist(err) {
		t.Fatalf("after Remove: %v", err)
	}
}
