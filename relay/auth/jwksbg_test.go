package auth_test

import (
	"crypto"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/goleak"

	"github.com/sserelay/sserelay/relay/auth"
)

// TestMain checks that no test leaves a goroutine behind: the JWKS refresher
// must end with Close.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// hangingJWKS serves a key set on its first fetch and then, while hang is
// set, holds every fetch open until release is closed or the client gives
// up, counting the fetches in flight.
type hangingJWKS struct {
	*jwksServer
	hang     atomic.Bool
	inFlight atomic.Int32
	entered  chan struct{} // one value per hanging fetch that started
	release  chan struct{}
}

func newHangingJWKS(t *testing.T, keys map[string]crypto.PublicKey) *hangingJWKS {
	h := &hangingJWKS{jwksServer: &jwksServer{}, entered: make(chan struct{}, 100), release: make(chan struct{})}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.hits.Add(1)
		if h.hang.Load() {
			h.inFlight.Add(1)
			defer h.inFlight.Add(-1)
			h.entered <- struct{}{}
			select {
			case <-h.release:
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(*h.body.Load())
	}))
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(h.release) }); h.Close() })
	h.serve(t, keys)
	return h
}

// waitEntered waits for a fetch to hang on the server (a hang guard only).
func (h *hangingJWKS) waitEntered(t *testing.T) {
	t.Helper()
	select {
	case <-h.entered:
	case <-time.After(20 * time.Second):
		t.Fatal("no JWKS fetch reached the server")
	}
}

// TestJWKSRefreshInBackground: a due refresh runs in the verifier's own
// goroutine, so that a key server that hangs delays no Verify: the cached
// keys serve meanwhile. Verify returns while the refetch is still held open
// by the server (with a fetch inside Verify it could return only after the
// fetch ended).
func TestJWKSRefreshInBackground(t *testing.T) {
	k := keys()
	srv := newHangingJWKS(t, map[string]crypto.PublicKey{"r1": &k.rsa1.PublicKey})
	v := newVerifier(t, auth.Config{JWKSURL: srv.URL, JWKSRefresh: 20 * time.Millisecond})
	srv.hang.Store(true)
	srv.waitEntered(t) // a refresh is due and hangs on the server
	tok := sign(t, jwt.SigningMethodRS256, k.rsa1, "r1", claims())
	for range 20 {
		checkVerify(t, v, tok, "")
	}
	if srv.inFlight.Load() != 1 {
		t.Fatalf("Verify returned after the refresh ended (%d fetches in flight): it waited for the key server", srv.inFlight.Load())
	}
	if got := srv.hits.Load(); got != 2 {
		t.Fatalf("JWKS fetched %d times while a refresh hung, want 2 (the first, and the one refresh)", got)
	}
}

// TestJWKSUnknownKIDRateLimited: tokens with unknown kids, from many
// requests at once and one after another, make at most one fetch per
// window; the requests that arrive while it runs wait for it, so that a
// rotated-in key works for all of them.
func TestJWKSUnknownKIDRateLimited(t *testing.T) {
	k := keys()
	srv := newJWKSServer(t, map[string]crypto.PublicKey{"r1": &k.rsa1.PublicKey})
	v := newVerifier(t, auth.Config{JWKSURL: srv.URL})
	srv.wantHits(t, 1)
	// The issuer rotates a key in; everyone's first token with it arrives at once.
	srv.serve(t, map[string]crypto.PublicKey{"r1": &k.rsa1.PublicKey, "r2": &k.rsa2.PublicKey})
	r2 := sign(t, jwt.SigningMethodRS256, k.rsa2, "r2", claims())
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			if _, err := v.Verify(r2); err != nil {
				t.Errorf("Verify with the rotated-in key: %v", err)
			}
		})
	}
	wg.Wait()
	srv.wantHits(t, 2)
	// An attacker's random kids: no more fetches within the window.
	for i := range 50 {
		checkVerify(t, v, sign(t, jwt.SigningMethodRS256, k.rsa2, "forged-"+strconv.Itoa(i), claims()), "token key unknown")
	}
	srv.wantHits(t, 2)
}

// TestJWKSUnknownKIDWhileKeyServerHangs: an unknown kid waits a bounded
// time for a key server that hangs, and fails; the known keys keep working
// meanwhile, and Close ends the refresher even with a fetch held open.
func TestJWKSUnknownKIDWhileKeyServerHangs(t *testing.T) {
	k := keys()
	srv := newHangingJWKS(t, map[string]crypto.PublicKey{"r1": &k.rsa1.PublicKey})
	v, err := auth.NewVerifier(t.Context(), auth.Config{JWKSURL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	srv.hang.Store(true)
	checkVerify(t, v, sign(t, jwt.SigningMethodRS256, k.rsa2, "new", claims()), "token key unknown")
	srv.waitEntered(t)
	checkVerify(t, v, sign(t, jwt.SigningMethodRS256, k.rsa1, "r1", claims()), "")
	v.Close()
	v.Close() // idempotent
	if srv.hits.Load() != 2 {
		t.Fatalf("JWKS fetched %d times, want 2", srv.hits.Load())
	}
}
