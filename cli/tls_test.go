package cli

import (
	"crypto/x509"
	"io"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sserelay/sserelay/test/testkit"
)

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
	first := testkit.WriteSelfSigned(t, certFile, keyFile, "test").SerialNumber
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

	second := testkit.WriteSelfSigned(t, certFile, keyFile, "test").SerialNumber
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
