package cli

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
	"github.com/sserelay/sserelay/test/testkit"
)

// natsTestServer runs a real JetStream server on a loopback port with
// opts (auth, TLS) on top of the test defaults.
func natsTestServer(t *testing.T, opts server.Options) *server.Server {
	t.Helper()
	opts.Host, opts.NoLog, opts.NoSigs, opts.JetStream = "127.0.0.1", true, true, true
	if opts.Port == 0 {
		opts.Port = -1
	}
	if opts.StoreDir == "" {
		opts.StoreDir = t.TempDir()
	}
	ns, err := server.NewServer(&opts)
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS server not ready")
	}
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	return ns
}

// relayProc is `sserelay serve` run in-process through Main.
type relayProc struct {
	addr   string
	cancel context.CancelFunc
	done   chan struct{} // closed when Main has returned code
	code   int
	mu     sync.Mutex
	stderr bytes.Buffer
}

func (p *relayProc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.Write(b)
}

func (p *relayProc) logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// startRelay runs serve with args against external NATS.
func startRelay(t *testing.T, args ...string) *relayProc {
	t.Helper()
	p := &relayProc{addr: testkit.FreeAddr(t), done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	all := append([]string{"sserelay", "serve", "--jwt-secret", "s", "--listen", p.addr, "--nats-listen", "off", "--log-level", "debug"}, args...)
	go func() { p.code = Main(ctx, all, p); close(p.done) }()
	t.Cleanup(func() { p.stop(t) })
	return p
}

// readyz returns the status of GET /readyz, 0 if there is no answer.
func (p *relayProc) readyz() int {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + p.addr + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// waitReadyz waits until /readyz answers want, failing if serve exits first.
func (p *relayProc) waitReadyz(t *testing.T, want int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for p.readyz() != want {
		select {
		case <-p.done:
			t.Fatalf("serve exited %d before /readyz was %d:\n%s", p.code, want, p.logs())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz not %d after 30 s:\n%s", want, p.logs())
		}
	}
}

// exit waits for serve to end by itself and returns its exit status.
func (p *relayProc) exit(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
		return p.code
	case <-time.After(30 * time.Second):
		t.Fatalf("serve still running:\n%s", p.logs())
		return -1
	}
}

// stop ends serve as a signal would and returns its exit status.
func (p *relayProc) stop(t *testing.T) int {
	p.cancel()
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		t.Errorf("serve did not stop:\n%s", p.logs())
	}
	return p.code
}

// TestExternalNATSAuth runs serve against real servers that require each
// way NATS authenticates: it must reach readiness (connected, stream
// created, consumer running) with the right credentials and fail, naming
// the server, with wrong ones.
func TestExternalNATSAuth(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}

	user, _ := nkeys.CreateUser()
	userPub, _ := user.PublicKey()
	userSeed, _ := user.Seed()
	other, _ := nkeys.CreateUser()
	otherSeed, _ := other.Seed()

	creds, wrongCreds, operator := operatorSetup(t)

	for _, tc := range []struct {
		name       string
		opts       server.Options
		good, bad  []string
		badMessage string
	}{
		{"user and password", server.Options{Users: []*server.User{{Username: "relay", Password: "s3cret"}}},
			[]string{"--nats-user", "relay", "--nats-password", "s3cret"},
			[]string{"--nats-user", "relay", "--nats-password", "wrong"}, "Authorization Violation"},
		{"token", server.Options{Authorization: "t0ken"},
			[]string{"--nats-token", "t0ken"}, []string{"--nats-token", "nope"}, "Authorization Violation"},
		{"nkey", server.Options{Nkeys: []*server.NkeyUser{{Nkey: userPub}}},
			[]string{"--nats-nkey", write("user.nk", userSeed)}, []string{"--nats-nkey", write("other.nk", otherSeed)}, "Authorization Violation"},
		{"credentials file", operator,
			[]string{"--nats-creds", write("user.creds", creds)}, []string{"--nats-creds", write("other.creds", wrongCreds)}, "Authorization Violation"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := natsTestServer(t, tc.opts)
			url := ns.ClientURL()
			p := startRelay(t, append([]string{"--nats-url", url}, tc.good...)...)
			p.waitReadyz(t, 200)
			if code := p.stop(t); code != 0 {
				t.Errorf("serve exited %d after a stop:\n%s", code, p.logs())
			}

			bad := startRelay(t, append([]string{"--nats-url", url}, tc.bad...)...)
			if code := bad.exit(t); code != 1 || !strings.Contains(bad.logs(), tc.badMessage) || !strings.Contains(bad.logs(), url) {
				t.Errorf("wrong credentials: exit %d, want 1 with %q and the URL:\n%s", code, tc.badMessage, bad.logs())
			}
		})
	}
}

// TestExternalNATSTLS: a server that requires TLS with client certificates
// (certificates made here), with several URLs of which the first is dead.
func TestExternalNATSTLS(t *testing.T) {
	dir := t.TempDir()
	pki := testkit.NewPKI(t, dir)
	serverTLS, err := server.GenTLSConfig(&server.TLSConfigOpts{
		CertFile: pki.ServerCert, KeyFile: pki.ServerKey, CaFile: pki.CA, Verify: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	ns := natsTestServer(t, server.Options{TLSConfig: serverTLS, TLS: true, TLSVerify: true})
	live := fmt.Sprintf("tls://127.0.0.1:%d", ns.Addr().(*net.TCPAddr).Port)
	dead := "tls://" + testkit.FreeAddr(t)
	urls := dead + "," + live

	p := startRelay(t, "--nats-url", urls, "--nats-tls-ca", pki.CA, "--nats-tls-cert", pki.ClientCert, "--nats-tls-key", pki.ClientKey)
	p.waitReadyz(t, 200)
	p.stop(t)

	// Without a client certificate the server refuses the handshake.
	bad := startRelay(t, "--nats-url", live, "--nats-tls-ca", pki.CA)
	if code := bad.exit(t); code != 1 || !strings.Contains(bad.logs(), live) {
		t.Errorf("no client certificate: exit %d:\n%s", code, bad.logs())
	}
	// Without the CA the client refuses the server's certificate.
	bad = startRelay(t, "--nats-url", live, "--nats-tls-cert", pki.ClientCert, "--nats-tls-key", pki.ClientKey)
	if code := bad.exit(t); code != 1 || !strings.Contains(bad.logs(), "certificate") {
		t.Errorf("unknown CA: exit %d:\n%s", code, bad.logs())
	}
	// A missing file is named before any connection.
	bad = startRelay(t, "--nats-url", live, "--nats-tls-ca", filepath.Join(dir, "none.pem"))
	if code := bad.exit(t); code != 1 || !strings.Contains(bad.logs(), "--nats-tls-ca "+filepath.Join(dir, "none.pem")) {
		t.Errorf("missing CA file: exit %d:\n%s", code, bad.logs())
	}
}

// TestExternalNATSReconnect: the server goes away and comes back on its
// port (with its store) after the relay has failed to reconnect many times:
// /readyz is 503 meanwhile and 200 again after, without a restart.
func TestExternalNATSReconnect(t *testing.T) {
	store := t.TempDir()
	ns := natsTestServer(t, server.Options{StoreDir: store, Authorization: "tok"})
	port := ns.Addr().(*net.TCPAddr).Port
	p := startRelay(t, "--nats-url", ns.ClientURL(), "--nats-token", "tok")
	p.waitReadyz(t, 200)

	ns.Shutdown()
	ns.WaitForShutdown()
	p.waitReadyz(t, 503)
	time.Sleep(3 * time.Second) // several failed attempts, the back-off growing
	natsTestServer(t, server.Options{StoreDir: store, Authorization: "tok", Port: port})
	p.waitReadyz(t, 200)
	if n := strings.Count(p.logs(), "NATS reconnected"); n != 1 {
		t.Errorf("%d reconnections logged, want 1:\n%s", n, p.logs())
	}
}

func TestReconnectDelay(t *testing.T) {
	prev := time.Duration(0)
	for a := 1; a <= 100; a++ {
		d := reconnectDelay(a)
		lo := min(reconnectBase<<(min(a, 10)-1), reconnectMax)
		if d < lo || d > lo+lo/4 {
			t.Errorf("attempt %d: delay %v, want %v to %v", a, d, lo, lo+lo/4)
		}
		if a <= 6 && d < prev/2 {
			t.Errorf("attempt %d: delay %v shrank from %v", a, d, prev)
		}
		prev = d
	}
}

// operatorSetup returns an operator-mode server configuration (in-memory
// account resolver, JetStream enabled for the account), the credentials of
// a user of that account, and those of a user signed by an unknown account.
func operatorSetup(t *testing.T) (creds, wrongCreds []byte, opts server.Options) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	op, _ := nkeys.CreateOperator()
	opPub, _ := op.PublicKey()
	opJWT, err := jwt.NewOperatorClaims(opPub).Encode(op)
	must(err)
	opClaims, err := jwt.DecodeOperatorClaims(opJWT)
	must(err)

	account := func(js bool) (nkeys.KeyPair, string) {
		acc, _ := nkeys.CreateAccount()
		accPub, _ := acc.PublicKey()
		ac := jwt.NewAccountClaims(accPub)
		if js {
			ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
		}
		accJWT, err := ac.Encode(op)
		must(err)
		return acc, accJWT
	}
	userCreds := func(acc nkeys.KeyPair) []byte {
		u, _ := nkeys.CreateUser()
		uPub, _ := u.PublicKey()
		uSeed, _ := u.Seed()
		accPub, _ := acc.PublicKey()
		uc := jwt.NewUserClaims(uPub)
		uc.IssuerAccount = accPub
		uJWT, err := uc.Encode(acc)
		must(err)
		c, err := jwt.FormatUserConfig(uJWT, uSeed)
		must(err)
		return c
	}
	acc, accJWT := account(true)
	stranger, _ := account(true)  // not known to the resolver
	sys, sysJWT := account(false) // JetStream in operator mode needs a system account (without JetStream)
	resolver := &server.MemAccResolver{}
	accPub, _ := acc.PublicKey()
	sysPub, _ := sys.PublicKey()
	must(resolver.Store(accPub, accJWT))
	must(resolver.Store(sysPub, sysJWT))
	opts = server.Options{TrustedOperators: []*jwt.OperatorClaims{opClaims}, AccountResolver: resolver, SystemAccount: sysPub}
	return userCreds(acc), userCreds(stranger), opts
}

// TestServeWaitsForNATS starts serve before its NATS server: it waits,
// retrying, and is ready once the server is up; with no server within
// --start-timeout it exits with an error that says so.
func TestServeWaitsForNATS(t *testing.T) {
	addr := testkit.FreeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	p := startRelay(t, "--nats-url", "nats://"+addr, "--start-timeout", "60s")
	time.Sleep(2 * time.Second) // several attempts
	select {
	case <-p.done:
		t.Fatalf("serve exited %d before its NATS server started:\n%s", p.code, p.logs())
	default:
	}
	n, _ := strconv.Atoi(port)
	natsTestServer(t, server.Options{Port: n})
	p.waitReadyz(t, 200)

	q := startRelay(t, "--nats-url", "nats://"+testkit.FreeAddr(t), "--start-timeout", "1s")
	if code := q.exit(t); code == 0 || !strings.Contains(q.logs(), "--start-timeout 1s") {
		t.Errorf("no NATS within --start-timeout: exit %d, logs:\n%s", code, q.logs())
	}
}
