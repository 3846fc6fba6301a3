// Package testkit holds what the tests of several packages need alike:
// certificates in files, free loopback ports and binaries built from this
// module. It is imported by tests only.
package testkit

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// PKI is a certificate authority and a server and a client certificate
// signed by it, as PEM files. The leaves are valid for 127.0.0.1 and
// localhost for an hour.
type PKI struct {
	CA                    string // the CA certificate
	ServerCert, ServerKey string
	ClientCert, ClientKey string
	Pool                  *x509.CertPool // holds the CA
}

// NewPKI writes a new PKI into dir.
func NewPKI(t testing.TB, dir string) PKI {
	t.Helper()
	now := time.Now()
	caKey := newKey(t)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sserelay test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	leaf := func(serial int64, name string, usage x509.ExtKeyUsage) (string, string) {
		k := newKey(t)
		der, err := x509.CreateCertificate(rand.Reader, leafTemplate(big.NewInt(serial), name, now, usage), ca, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		certFile, keyFile := filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
		writeKey(t, keyFile, k)
		writePEM(t, certFile, "CERTIFICATE", der)
		return certFile, keyFile
	}
	p := PKI{CA: filepath.Join(dir, "ca.pem"), Pool: x509.NewCertPool()}
	writePEM(t, p.CA, "CERTIFICATE", caDER)
	p.Pool.AddCert(ca)
	p.ServerCert, p.ServerKey = leaf(2, "server", x509.ExtKeyUsageServerAuth)
	p.ClientCert, p.ClientKey = leaf(3, "client", x509.ExtKeyUsageClientAuth)
	return p
}

// WriteSelfSigned writes a new self-signed server certificate for
// 127.0.0.1 and localhost and its key, replacing what is there, and returns
// the certificate. The key is written first: a reload between the two
// writes fails to load and keeps the old pair.
func WriteSelfSigned(t testing.TB, certFile, keyFile, name string) *x509.Certificate {
	t.Helper()
	key := newKey(t)
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	tmpl := leafTemplate(serial, name, time.Now(), x509.ExtKeyUsageServerAuth)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	writeKey(t, keyFile, key)
	writePEM(t, certFile, "CERTIFICATE", der)
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func leafTemplate(serial *big.Int, name string, now time.Time, usage x509.ExtKeyUsage) *x509.Certificate {
	return &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: name},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
	}
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func writeKey(t testing.TB, path string, k *ecdsa.PrivateKey) {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, path, "EC PRIVATE KEY", der)
}

func writePEM(t testing.TB, path, kind string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// FreeAddr returns a TCP address on 127.0.0.1 that was free a moment ago,
// for a child process or a restart that must bind a port known in advance.
//
// The port is taken at random below the kernel's ephemeral range, not by
// listening on port 0: a port from that range goes back to the kernel's
// pool when the probe closes, and the next outgoing connection of any
// process (tests open thousands) may take it before the child binds.
// Below the range only another FreeAddr can collide, and the probe's
// listen catches one that has bound; a process never gets a port twice.
func FreeAddr(t testing.TB) string {
	t.Helper()
	lo, hi := freeRange()
	for range 1000 {
		port := lo + mrand.IntN(hi-lo)
		freeMu.Lock()
		taken := freeGiven[port]
		freeGiven[port] = true
		freeMu.Unlock()
		if taken {
			continue
		}
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if ln, err := net.Listen("tcp", addr); err == nil {
			ln.Close()
			return addr
		}
	}
	t.Fatalf("no free port in [%d, %d) after 1000 tries", lo, hi)
	return ""
}

var (
	freeMu    sync.Mutex
	freeGiven = map[int]bool{}
)

// freeRange returns the ports FreeAddr picks from: from 10000 up to the
// kernel's ephemeral range (ip_local_port_range, 32768 by default).
func freeRange() (lo, hi int) {
	lo, hi = 10000, 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > lo+1000 {
				hi = n
			}
		}
	}
	return lo, hi
}

// FreePort is the port of FreeAddr.
func FreePort(t testing.TB) int {
	t.Helper()
	addr, err := net.ResolveTCPAddr("tcp", FreeAddr(t))
	if err != nil {
		t.Fatal(err)
	}
	return addr.Port
}

// Binaries builds Go programs once per test process into a directory of
// its own, for tests that run them as child processes. Make one in
// TestMain and Remove it after m.Run.
type Binaries struct {
	dir string

	mu     sync.Mutex
	builds map[string]*build
}

type build struct {
	once sync.Once
	path string
	err  error
}

// NewBinaries makes the directory the binaries go to.
func NewBinaries() (*Binaries, error) {
	dir, err := os.MkdirTemp("", "sserelay-test-bin-")
	if err != nil {
		return nil, fmt.Errorf("binaries: %w", err)
	}
	return &Binaries{dir: dir, builds: map[string]*build{}}, nil
}

// Build builds the main package pkg with `go build` and extra flags as
// name, once per Binaries, and returns its path; a failed build fails every
// test that asks for it.
func (b *Binaries) Build(t testing.TB, name, pkg string, flags ...string) string {
	t.Helper()
	path, err := b.Make(name, pkg, flags...)
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// Make is Build for TestMain: it returns the error.
func (b *Binaries) Make(name, pkg string, flags ...string) (string, error) {
	b.mu.Lock()
	bd := b.builds[name]
	if bd == nil {
		bd = &build{}
		b.builds[name] = bd
	}
	b.mu.Unlock()
	bd.once.Do(func() {
		p := filepath.Join(b.dir, name)
		args := append(append([]string{"build", "-o", p}, flags...), pkg)
		if out, err := exec.Command("go", args...).CombinedOutput(); err != nil {
			bd.err = fmt.Errorf("go %v: %v\n%s", args, err, out)
			return
		}
		bd.path = p
	})
	return bd.path, bd.err
}

// Remove deletes the directory and what was built into it.
func (b *Binaries) Remove() error { return os.RemoveAll(b.dir) }

// RelayPkg is the main package of the sserelay binary.
const RelayPkg = "github.com/sserelay/sserelay/cli/sserelay"

// Relay builds the sserelay binary once per Binaries and returns its path.
func (b *Binaries) Relay(t testing.TB) string {
	t.Helper()
	return b.Build(t, "sserelay", RelayPkg)
}

// RunTests is the body of TestMain for a package whose tests run built
// programs: it sets *b to new Binaries, runs the tests, removes what was
// built and returns the code for os.Exit (1 if there is nowhere to build).
func RunTests(m *testing.M, b **Binaries) int {
	bins, err := NewBinaries()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	*b = bins
	defer bins.Remove()
	return m.Run()
}
