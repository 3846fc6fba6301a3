package cli

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// writePair writes a new self-signed certificate and key and returns the
// certificate's serial number.
func writePair(t *testing.T, certFile, keyFile string) *big.Int {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: "test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return serial
}

func servedSerial(t *testing.T, r *certReloader) *big.Int {
	t.Helper()
	c, err := r.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return leaf.SerialNumber
}

// touch moves a file's modification time forward, so that a rewrite within
// the file system's time resolution still shows.
func touch(t *testing.T, path string, d time.Duration) {
	t.Helper()
	at := time.Now().Add(d)
	if err := os.Chtimes(path, at, at); err != nil {
		t.Fatal(err)
	}
}

// TestCertReloader: a renewed pair is served; a pair that does not load
// (caught half-written) keeps the previous certificate until it does.
func TestCertReloader(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	first := writePair(t, certFile, keyFile)
	r, err := newCertReloader(certFile, keyFile, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	r.checkEvery = 0
	if got := servedSerial(t, r); got.Cmp(first) != 0 {
		t.Fatalf("serial %v, want %v", got, first)
	}

	if err := os.WriteFile(certFile, []byte("-----BEGIN CERTIFICATE-----\ntrunc"), 0o644); err != nil {
		t.Fatal(err)
	}
	touch(t, certFile, time.Second)
	if got := servedSerial(t, r); got.Cmp(first) != 0 {
		t.Fatalf("after a broken write: serial %v, want the previous %v", got, first)
	}

	second := writePair(t, certFile, keyFile)
	touch(t, certFile, 2*time.Second)
	touch(t, keyFile, 2*time.Second)
	if got := servedSerial(t, r); got.Cmp(second) != 0 {
		t.Fatalf("after the renewal: serial %v, want %v", got, second)
	}

	if _, err := newCertReloader(filepath.Join(dir, "missing.crt"), keyFile, slog.Default()); err == nil {
		t.Error("a missing certificate file loaded")
	}
	if _, err := serverTLS(certFile, "", slog.Default()); err == nil {
		t.Error("--tls-cert without --tls-key accepted")
	}
}
