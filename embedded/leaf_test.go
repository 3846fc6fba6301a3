package embedded

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"
	"github.com/sserelay/sserelay/test/testkit"
)

// startHub runs an in-process JetStream server in domain "hub" whose leaf
// node port wants TLS with a client certificate and a user and password.
func startHub(t *testing.T, p testkit.PKI) (*server.Server, int) {
	t.Helper()
	cert, err := tls.LoadX509KeyPair(p.ServerCert, p.ServerKey)
	if err != nil {
		t.Fatal(err)
	}
	return runHub(t, func(opts *server.Options) {
		opts.LeafNode.Username, opts.LeafNode.Password = "leaf", "s3cret"
		opts.LeafNode.TLSConfig = &tls.Config{
			MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert},
			ClientCAs: p.Pool, ClientAuth: tls.RequireAndVerifyClientCert,
		}
	})
}

// runHub runs an in-process JetStream server in domain "hub" with a leaf
// node port on 127.0.0.1, configured further by configure, until the test
// ends; it returns the server and its leaf node port.
func runHub(t *testing.T, configure func(*server.Options)) (*server.Server, int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	opts := &server.Options{
		ServerName: "hub", Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true, NoLog: true,
		JetStream: true, JetStreamDomain: "hub", StoreDir: t.TempDir(),
	}
	opts.LeafNode.Host, opts.LeafNode.Port = "127.0.0.1", port
	configure(opts)
	hub, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go hub.Start()
	if !hub.ReadyForConnections(10 * time.Second) {
		t.Fatal("hub not ready")
	}
	t.Cleanup(func() { hub.Shutdown(); hub.WaitForShutdown() })
	return hub, port
}

// TestLeaf: the embedded server as a leaf node of a hub over TLS with a
// client certificate and a password. It runs no JetStream of its own: a
// stream created through the hub's domain lives in the hub, and a
// publisher on the leaf's own port gets the hub's acknowledgement.
func TestLeaf(t *testing.T) {
	pki := testkit.NewPKI(t, t.TempDir())
	hub, port := startHub(t, pki)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	leaf, err := Start(ctx, Options{Name: "pod-a", Listen: "127.0.0.1:0", Leaf: &LeafOptions{
		URLs:  []string{fmt.Sprintf("nats-leaf://leaf:s3cret@127.0.0.1:%d", port)},
		TLSCA: pki.CA, TLSCert: pki.ClientCert, TLSKey: pki.ClientKey,
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer leaf.Shutdown()
	if hub := leaf.Hub(); strings.Contains(hub, "s3cret") || !strings.Contains(hub, fmt.Sprint(port)) {
		t.Errorf("Hub() = %q, want the hub URL without its password", hub)
	}
	if leaf.NATS().JetStreamEnabled() {
		t.Error("the leaf runs JetStream: it would answer JetStream requests from a store of its own")
	}

	// The relay's view: in-process, the hub's domain.
	nc, err := nats.Connect("", leaf.ConnectOption())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.NewWithDomain(nc, "hub")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}}); err != nil {
		t.Fatal(err)
	}
	// The app's view: the leaf's TCP port, plain JetStream publishing.
	app, err := nats.Connect(leaf.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer app.Close()
	ajs, _ := jetstream.New(app)
	ack, err := ajs.Publish(ctx, "t.x", []byte("from the pod"))
	if err != nil {
		t.Fatal(err)
	}
	if ack.Domain != "hub" || ack.Stream != "T" {
		t.Errorf("ack from domain %q stream %q, want the hub's stream T", ack.Domain, ack.Stream)
	}
	// The event is in the hub's store.
	hnc, err := nats.Connect(hub.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer hnc.Close()
	hjs, _ := jetstream.New(hnc)
	s, err := hjs.Stream(ctx, "T")
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.GetMsg(ctx, ack.Sequence)
	if err != nil || string(m.Data) != "from the pod" {
		t.Fatalf("hub's stream at %d: %v %q", ack.Sequence, err, m.Data)
	}
}

// TestLeafRefusesBadSettings: a wrong CA, a missing password, a missing
// file or a bad URL fail the start with a message that says which.
func TestLeafRefusesBadSettings(t *testing.T) {
	dir := t.TempDir()
	pki := testkit.NewPKI(t, dir)
	other := testkit.NewPKI(t, t.TempDir())
	_, port := startHub(t, pki)
	good := fmt.Sprintf("nats-leaf://leaf:s3cret@127.0.0.1:%d", port)
	for _, c := range []struct {
		name string
		leaf LeafOptions
		want string
	}{
		{"wrong CA", LeafOptions{URLs: []string{good}, TLSCA: other.CA, TLSCert: pki.ClientCert, TLSKey: pki.ClientKey}, "no connection to the hub"},
		{"no client certificate", LeafOptions{URLs: []string{good}, TLSCA: pki.CA}, "no connection to the hub"},
		{"wrong password", LeafOptions{URLs: []string{fmt.Sprintf("nats-leaf://leaf:nope@127.0.0.1:%d", port)}, TLSCA: pki.CA, TLSCert: pki.ClientCert, TLSKey: pki.ClientKey}, "no connection to the hub"},
		{"no URL", LeafOptions{}, "no hub URL"},
		{"bad scheme", LeafOptions{URLs: []string{"http://127.0.0.1:1"}}, "scheme"},
		{"missing CA file", LeafOptions{URLs: []string{good}, TLSCA: filepath.Join(dir, "nope.pem")}, "TLS CA"},
		{"key without cert", LeafOptions{URLs: []string{good}, TLSKey: pki.ClientKey}, "both the certificate and the key"},
		{"missing credentials", LeafOptions{URLs: []string{good}, Credentials: filepath.Join(dir, "nope.creds")}, "credentials"},
	} {
		t.Run(c.name, func(t *testing.T) {
			leaf := c.leaf
			s, err := Start(context.Background(), Options{Leaf: &leaf, ReadyTimeout: 2 * time.Second})
			if err == nil {
				s.Shutdown()
				t.Fatal("started")
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("error %q, want it to mention %q", err, c.want)
			}
			if strings.Contains(err.Error(), "s3cret") || strings.Contains(err.Error(), "nope@") {
				t.Errorf("error %q shows a password", err)
			}
		})
	}
}

// TestLeafCredentials: a hub in operator mode (accounts and users as JWTs)
// lets the leaf in with a credentials file only; the leaf's traffic then
// lands in that user's account, whose JetStream serves the stream.
func TestLeafCredentials(t *testing.T) {
	okp, _ := nkeys.CreateOperator()
	opub, _ := okp.PublicKey()
	oc := jwt.NewOperatorClaims(opub)
	ojwt, err := oc.Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	operator, err := jwt.DecodeOperatorClaims(ojwt)
	if err != nil {
		t.Fatal(err)
	}
	akp, _ := nkeys.CreateAccount()
	apub, _ := akp.PublicKey()
	ac := jwt.NewAccountClaims(apub)
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	ajwt, err := ac.Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	ukp, _ := nkeys.CreateUser()
	upub, _ := ukp.PublicKey()
	ujwt, err := jwt.NewUserClaims(upub).Encode(akp)
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := ukp.Seed()
	creds, err := jwt.FormatUserConfig(ujwt, seed)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	credsFile := filepath.Join(dir, "leaf.creds")
	if err := os.WriteFile(credsFile, creds, 0o600); err != nil {
		t.Fatal(err)
	}

	// JetStream in operator mode needs a system account.
	skp, _ := nkeys.CreateAccount()
	spub, _ := skp.PublicKey()
	sjwt, err := jwt.NewAccountClaims(spub).Encode(okp)
	if err != nil {
		t.Fatal(err)
	}
	resolver := &server.MemAccResolver{}
	for pub, j := range map[string]string{apub: ajwt, spub: sjwt} {
		if err := resolver.Store(pub, j); err != nil {
			t.Fatal(err)
		}
	}
	hub, port := runHub(t, func(opts *server.Options) {
		opts.TrustedOperators = []*jwt.OperatorClaims{operator}
		opts.AccountResolver, opts.SystemAccount = resolver, spub
	})

	hubURL := []string{fmt.Sprintf("nats-leaf://127.0.0.1:%d", port)}
	if s, err := Start(context.Background(), Options{Leaf: &LeafOptions{URLs: hubURL}, ReadyTimeout: 2 * time.Second}); err == nil {
		s.Shutdown()
		t.Fatal("a leaf without credentials joined a hub in operator mode")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	leaf, err := Start(ctx, Options{Leaf: &LeafOptions{URLs: hubURL, Credentials: credsFile}})
	if err != nil {
		t.Fatal(err)
	}
	defer leaf.Shutdown()
	nc, err := nats.Connect("", leaf.ConnectOption())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.NewWithDomain(nc, "hub")
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}}); err != nil {
		t.Fatal(err)
	}
	ack, err := js.Publish(ctx, "t.x", []byte("with credentials"))
	if err != nil {
		t.Fatal(err)
	}
	if ack.Domain != "hub" {
		t.Errorf("ack from domain %q, want hub", ack.Domain)
	}
	acc, err := hub.LookupAccount(apub)
	if err != nil {
		t.Fatal(err)
	}
	if n := acc.JetStreamUsage().Streams; n != 1 {
		t.Errorf("the user's account on the hub has %d streams, want 1", n)
	}
}
