package auth_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/sserelay/sserelay/relay/auth"
)

var secret = []byte("test-secret-0123456789-0123456789")

// testKeys are generated once: RSA generation is slow, above all under -race.
type testKeys struct {
	rsa1, rsa2 *rsa.PrivateKey
	ec1, ec2   *ecdsa.PrivateKey
	ed1, ed2   ed25519.PrivateKey
}

var keys = sync.OnceValue(func() testKeys {
	var k testKeys
	var err error
	for _, p := range []**rsa.PrivateKey{&k.rsa1, &k.rsa2} {
		if *p, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
	}
	for _, p := range []**ecdsa.PrivateKey{&k.ec1, &k.ec2} {
		if *p, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			panic(err)
		}
	}
	for _, p := range []*ed25519.PrivateKey{&k.ed1, &k.ed2} {
		if _, *p, err = ed25519.GenerateKey(rand.Reader); err != nil {
			panic(err)
		}
	}
	return k
})

// claims returns map claims with sub and exp in an hour, changed by edits.
func claims(edits ...func(jwt.MapClaims)) jwt.MapClaims {
	c := jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix()}
	for _, e := range edits {
		e(c)
	}
	return c
}

func set(k string, v any) func(jwt.MapClaims) { return func(c jwt.MapClaims) { c[k] = v } }
func del(k string) func(jwt.MapClaims)        { return func(c jwt.MapClaims) { delete(c, k) } }

// sign signs c with the library directly, so that tests can mint tokens auth.Sign refuses to.
func sign(t testing.TB, m jwt.SigningMethod, key any, kid string, c jwt.Claims) string {
	t.Helper()
	tok := jwt.NewWithClaims(m, c)
	if kid != "" {
		tok.Header["kid"] = kid
	}
	s, err := tok.SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// unsigned hand-crafts an `alg: none` token.
func unsigned(t testing.TB, c jwt.MapClaims) string {
	t.Helper()
	payload, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + enc(payload) + "."
}

func newVerifier(t testing.TB, cfg auth.Config) *auth.Verifier {
	t.Helper()
	v, err := auth.NewVerifier(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	return v
}

// checkVerify verifies token and compares the outcome with want ("" = accepted).
func checkVerify(t *testing.T, v *auth.Verifier, token, want string) *auth.Claims {
	t.Helper()
	c, err := v.Verify(token)
	switch {
	case want == "" && err != nil:
		t.Fatalf("Verify: %v, want success", err)
	case want == "":
		if c == nil || c.Subject == "" {
			t.Fatalf("Verify returned claims %+v", c)
		}
	case err == nil:
		t.Fatalf("Verify accepted the token, want %q", want)
	case !errors.Is(err, auth.ErrInvalidToken) || err.Error() != want:
		t.Fatalf("Verify: %q (Is ErrInvalidToken: %v), want %q", err, errors.Is(err, auth.ErrInvalidToken), want)
	}
	return c
}

func TestVerifyHS256(t *testing.T) {
	hs := func(c jwt.MapClaims) string { return sign(t, jwt.SigningMethodHS256, secret, "", c) }
	valid := hs(claims())
	parts := strings.Split(valid, ".")
	otherPayload := base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"mallory"}`))

	tests := []struct {
		name  string
		cfg   auth.Config // Secret is filled in
		token string
		want  string
	}{
		{"valid", auth.Config{}, valid, ""},
		{"valid no exp", auth.Config{}, hs(claims(del("exp"))), ""},
		{"expired", auth.Config{}, hs(claims(set("exp", time.Now().Add(-time.Hour).Unix()))), "token expired"},
		{"expired within leeway", auth.Config{Leeway: time.Minute}, hs(claims(set("exp", time.Now().Add(-10*time.Second).Unix()))), ""},
		{"nbf in future", auth.Config{}, hs(claims(set("nbf", time.Now().Add(time.Hour).Unix()))), "token not valid yet"},
		{"nbf within leeway", auth.Config{Leeway: time.Minute}, hs(claims(set("nbf", time.Now().Add(10*time.Second).Unix()))), ""},
		{"wrong secret", auth.Config{}, sign(t, jwt.SigningMethodHS256, []byte("other"), "", claims()), "token signature invalid"},
		{"payload swapped", auth.Config{}, parts[0] + "." + otherPayload + "." + parts[2], "token signature invalid"},
		{"alg none", auth.Config{}, unsigned(t, claims()), "token algorithm not allowed"},
		{"HS512", auth.Config{}, sign(t, jwt.SigningMethodHS512, secret, "", claims()), "token algorithm not allowed"},
		{"malformed", auth.Config{}, "not-a-token", "token malformed"},
		{"empty", auth.Config{}, "", "token malformed"},
		{"missing sub", auth.Config{}, hs(claims(del("sub"))), "token has no sub"},
		{"empty sub", auth.Config{}, hs(claims(set("sub", ""))), "token has no sub"},
		{"sub with dot", auth.Config{}, hs(claims(set("sub", "a.b"))), "token sub is not a valid feed name"},
		{"sub with star", auth.Config{}, hs(claims(set("sub", "*"))), "token sub is not a valid feed name"},
		{"sub with gt", auth.Config{}, hs(claims(set("sub", "a>"))), "token sub is not a valid feed name"},
		{"sub with space", auth.Config{}, hs(claims(set("sub", "a b"))), "token sub is not a valid feed name"},
		{"sub with control", auth.Config{}, hs(claims(set("sub", "a\x00b"))), "token sub is not a valid feed name"},
		{"sub 128 bytes", auth.Config{}, hs(claims(set("sub", strings.Repeat("u", 128)))), ""},
		{"sub 129 bytes", auth.Config{}, hs(claims(set("sub", strings.Repeat("u", 129)))), "token sub is not a valid feed name"},
		{"issuer match", auth.Config{Issuer: "idp"}, hs(claims(set("iss", "idp"))), ""},
		{"issuer mismatch", auth.Config{Issuer: "idp"}, hs(claims(set("iss", "evil"))), "token issuer not accepted"},
		{"issuer missing", auth.Config{Issuer: "idp"}, hs(claims()), "token has no iss"},
		{"audience in list", auth.Config{Audience: "relay"}, hs(claims(set("aud", []string{"x", "relay"}))), ""},
		{"audience mismatch", auth.Config{Audience: "relay"}, hs(claims(set("aud", "other"))), "token audience not accepted"},
		{"audience missing", auth.Config{Audience: "relay"}, hs(claims()), "token has no aud"},
		{"require exp, has exp", auth.Config{RequireExp: true}, valid, ""},
		{"require exp, no exp", auth.Config{RequireExp: true}, hs(claims(del("exp"))), "token has no exp"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Secret = secret
			checkVerify(t, newVerifier(t, tt.cfg), tt.token, tt.want)
		})
	}
}

// writePEM writes blocks of type typ to a file in a temporary directory and returns its path.
func writePEM(t *testing.T, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func pkixDER(t *testing.T, pub crypto.PublicKey) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func certificate(t *testing.T, priv crypto.Signer) []byte {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "issuer"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, priv.Public(), priv)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestVerifyPublicKeyFile(t *testing.T) {
	k := keys()
	tests := []struct {
		name      string
		typ       string
		der       []byte
		method    jwt.SigningMethod
		key, othr any // signing key, and another key of the same type
	}{
		{"RS256 PKIX", "PUBLIC KEY", pkixDER(t, &k.rsa1.PublicKey), jwt.SigningMethodRS256, k.rsa1, k.rsa2},
		{"RS256 PKCS1", "RSA PUBLIC KEY", x509.MarshalPKCS1PublicKey(&k.rsa1.PublicKey), jwt.SigningMethodRS256, k.rsa1, k.rsa2},
		{"RS256 certificate", "CERTIFICATE", certificate(t, k.rsa1), jwt.SigningMethodRS256, k.rsa1, k.rsa2},
		{"ES256 PKIX", "PUBLIC KEY", pkixDER(t, &k.ec1.PublicKey), jwt.SigningMethodES256, k.ec1, k.ec2},
		{"ES256 certificate", "CERTIFICATE", certificate(t, k.ec1), jwt.SigningMethodES256, k.ec1, k.ec2},
		{"EdDSA PKIX", "PUBLIC KEY", pkixDER(t, k.ed1.Public()), jwt.SigningMethodEdDSA, k.ed1, k.ed2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writePEM(t, tt.typ, tt.der)
			pemBytes, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			v := newVerifier(t, auth.Config{PublicKeyFile: path})

			checkVerify(t, v, sign(t, tt.method, tt.key, "", claims()), "")
			checkVerify(t, v, sign(t, tt.method, tt.othr, "", claims()), "token signature invalid")
			checkVerify(t, v, sign(t, tt.method, tt.key, "", claims(set("exp", time.Now().Add(-time.Hour).Unix()))), "token expired")
			// Alg confusion: an HS256 token keyed with the public key file, which anyone may have.
			checkVerify(t, v, sign(t, jwt.SigningMethodHS256, pemBytes, "", claims()), "token algorithm not allowed")
			checkVerify(t, v, sign(t, jwt.SigningMethodHS256, tt.der, "", claims()), "token algorithm not allowed")
			checkVerify(t, v, unsigned(t, claims()), "token algorithm not allowed")
			// A key type that is not the configured one.
			other := map[string]string{"RS256": "ES256", "ES256": "EdDSA", "EdDSA": "RS256"}[tt.method.Alg()]
			otherKey := map[string]any{"RS256": k.rsa1, "ES256": k.ec1, "EdDSA": k.ed1}[other]
			checkVerify(t, v, sign(t, jwt.GetSigningMethod(other), otherKey, "", claims()), "token algorithm not allowed")
		})
	}
}

func TestNewVerifierErrors(t *testing.T) {
	k := keys()
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	privDER, err := x509.MarshalPKCS8PrivateKey(k.ed1)
	if err != nil {
		t.Fatal(err)
	}
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	defer down.Close()
	useless := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte(`{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`))
	}))
	defer useless.Close()

	tests := []struct {
		name    string
		cfg     auth.Config
		isNoKey bool
	}{
		{"no key", auth.Config{}, true},
		{"two keys", auth.Config{Secret: secret, JWKSURL: "http://127.0.0.1:1/"}, true},
		{"missing file", auth.Config{PublicKeyFile: filepath.Join(t.TempDir(), "nope.pem")}, false},
		{"private key file", auth.Config{PublicKeyFile: writePEM(t, "PRIVATE KEY", privDER)}, false},
		{"P-384 key", auth.Config{PublicKeyFile: writePEM(t, "PUBLIC KEY", pkixDER(t, &p384.PublicKey))}, false},
		{"RSA 1024", auth.Config{PublicKeyFile: writePEM(t, "PUBLIC KEY", pkixDER(t, &small.PublicKey))}, false},
		{"JWKS down", auth.Config{JWKSURL: down.URL}, false},
		{"JWKS without usable key", auth.Config{JWKSURL: useless.URL}, false},
		{"JWKS bad scheme", auth.Config{JWKSURL: "file:///etc/jwks.json"}, false},
		{"negative leeway", auth.Config{Secret: secret, Leeway: -time.Second}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := auth.NewVerifier(context.Background(), tt.cfg)
			if err == nil || v != nil {
				t.Fatalf("NewVerifier = %v, %v; want an error", v, err)
			}
			if errors.Is(err, auth.ErrNoKey) != tt.isNoKey {
				t.Fatalf("NewVerifier: %v; errors.Is(ErrNoKey) = %v, want %v", err, !tt.isNoKey, tt.isNoKey)
			}
		})
	}
}

// jwksServer serves whatever key set it is given and counts the fetches.
type jwksServer struct {
	*httptest.Server
	body    atomic.Pointer[[]byte]
	failing atomic.Bool
	hits    atomic.Int32
}

func newJWKSServer(t *testing.T, keys map[string]crypto.PublicKey) *jwksServer {
	s := &jwksServer{}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		s.hits.Add(1)
		if s.failing.Load() {
			http.Error(w, "down", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(*s.body.Load())
	}))
	t.Cleanup(s.Close)
	s.serve(t, keys)
	return s
}

// serve replaces the key set, as an issuer rotating its keys would.
func (s *jwksServer) serve(t *testing.T, keys map[string]crypto.PublicKey) {
	t.Helper()
	enc := base64.RawURLEncoding.EncodeToString
	var set []map[string]string
	for kid, pub := range keys {
		switch k := pub.(type) {
		case *rsa.PublicKey:
			set = append(set, map[string]string{"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
				"n": enc(k.N.Bytes()), "e": enc(big.NewInt(int64(k.E)).Bytes())})
		case *ecdsa.PublicKey:
			b, err := k.Bytes()
			if err != nil {
				t.Fatal(err)
			}
			set = append(set, map[string]string{"kty": "EC", "kid": kid, "crv": "P-256", "x": enc(b[1:33]), "y": enc(b[33:])})
		case ed25519.PublicKey:
			set = append(set, map[string]string{"kty": "OKP", "kid": kid, "crv": "Ed25519", "alg": "EdDSA", "x": enc(k)})
		}
	}
	// An encryption key next to them must be skipped, not break the set.
	set = append(set, map[string]string{"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"})
	body, err := json.Marshal(map[string]any{"keys": set})
	if err != nil {
		t.Fatal(err)
	}
	s.body.Store(&body)
}

func (s *jwksServer) wantHits(t *testing.T, want int32) {
	t.Helper()
	if got := s.hits.Load(); got != want {
		t.Fatalf("JWKS fetched %d times, want %d", got, want)
	}
}

func TestJWKS(t *testing.T) {
	k := keys()
	srv := newJWKSServer(t, map[string]crypto.PublicKey{
		"r1": &k.rsa1.PublicKey, "e1": k.ed1.Public(), "c1": &k.ec1.PublicKey,
	})
	v := newVerifier(t, auth.Config{JWKSURL: srv.URL, Issuer: "idp"})
	srv.wantHits(t, 1)
	c := claims(set("iss", "idp"))

	tests := []struct {
		name  string
		token string
		want  string
	}{
		{"RS256 kid", sign(t, jwt.SigningMethodRS256, k.rsa1, "r1", c), ""},
		{"EdDSA kid", sign(t, jwt.SigningMethodEdDSA, k.ed1, "e1", c), ""},
		{"ES256 kid", sign(t, jwt.SigningMethodES256, k.ec1, "c1", c), ""},
		{"no kid tries keys of its alg", sign(t, jwt.SigningMethodEdDSA, k.ed1, "", c), ""},
		{"no kid, wrong key", sign(t, jwt.SigningMethodEdDSA, k.ed2, "", c), "token signature invalid"},
		{"kid of another key", sign(t, jwt.SigningMethodRS256, k.rsa2, "r1", c), "token signature invalid"},
		{"alg not the kid's", sign(t, jwt.SigningMethodEdDSA, k.ed1, "r1", c), "token algorithm not allowed"},
		{"HS256 with the JWKS as secret", sign(t, jwt.SigningMethodHS256, *srv.body.Load(), "r1", c), "token algorithm not allowed"},
		{"alg none", unsigned(t, c), "token algorithm not allowed"},
		{"issuer checked", sign(t, jwt.SigningMethodRS256, k.rsa1, "r1", claims()), "token has no iss"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkVerify(t, v, tt.token, tt.want) })
	}
	srv.wantHits(t, 1) // known kids never refetch

	// An unknown kid refetches once; a second one within the rate limit does not.
	checkVerify(t, v, sign(t, jwt.SigningMethodRS256, k.rsa2, "x1", c), "token key unknown")
	srv.wantHits(t, 2)
	checkVerify(t, v, sign(t, jwt.SigningMethodRS256, k.rsa2, "x2", c), "token key unknown")
	srv.wantHits(t, 2)
}

func TestJWKSRotation(t *testing.T) {
	k := keys()
	srv := newJWKSServer(t, map[string]crypto.PublicKey{"r1": &k.rsa1.PublicKey})
	v := newVerifier(t, auth.Config{JWKSURL: srv.URL})

	// The issuer adds a key and signs with it: the unknown kid makes the relay refetch at once.
	srv.serve(t, map[string]crypto.PublicKey{"r1": &k.rsa1.PublicKey, "r2": &k.rsa2.PublicKey})
	checkVerify(t, v, sign(t, jwt.SigningMethodRS256, k.rsa2, "r2", claims()), "")
	srv.wantHits(t, 2)
	checkVerify(t, v, sign(t, jwt.SigningMethodRS256, k.rsa1, "r1", claims()), "")
	srv.wantHits(t, 2)
}

func TestJWKSRefresh(t *testing.T) {
	k := keys()
	srv := newJWKSServer(t, map[string]crypto.PublicKey{"r1": &k.rsa1.PublicKey})
	v := newVerifier(t, auth.Config{JWKSURL: srv.URL, JWKSRefresh: time.Millisecond})
	r1 := sign(t, jwt.SigningMethodRS256, k.rsa1, "r1", claims())

	// The endpoint goes down: the refetches fail and the cached key keeps working.
	srv.failing.Store(true)
	start := srv.hits.Load()
	eventually(t, "a failed refetch", func() bool { return srv.hits.Load() > start+1 })
	checkVerify(t, v, r1, "")

	// It comes back having retired r1: the next refetch (the failure pushed it back by only
	// JWKSRefresh, as that is shorter than the retry interval) drops r1.
	srv.serve(t, map[string]crypto.PublicKey{"e1": k.ed1.Public()})
	srv.failing.Store(false)
	e1 := sign(t, jwt.SigningMethodEdDSA, k.ed1, "e1", claims())
	eventually(t, "the new key set in use", func() bool { _, err := v.Verify(e1); return err == nil })
	checkVerify(t, v, r1, "token key unknown")
}

// eventually polls cond until it holds (a hang guard of 20 s, never a speed check).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after 20 s", what)
		}
	}
}

// TestJWKSConcurrent runs Verify from many goroutines while refetches happen, for -race.
func TestJWKSConcurrent(t *testing.T) {
	k := keys()
	srv := newJWKSServer(t, map[string]crypto.PublicKey{"e1": k.ed1.Public()})
	v := newVerifier(t, auth.Config{JWKSURL: srv.URL, JWKSRefresh: time.Millisecond})
	good := sign(t, jwt.SigningMethodEdDSA, k.ed1, "e1", claims())
	unknown := sign(t, jwt.SigningMethodEdDSA, k.ed1, "zz", claims())

	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 50 {
				if _, err := v.Verify(good); err != nil {
					t.Errorf("Verify(good): %v", err)
					return
				}
				if _, err := v.Verify(unknown); err == nil {
					t.Error("Verify(unknown kid) succeeded")
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestClaims(t *testing.T) {
	v := newVerifier(t, auth.Config{Secret: secret})
	verify := func(c jwt.MapClaims) *auth.Claims {
		t.Helper()
		return checkVerify(t, v, sign(t, jwt.SigningMethodHS256, secret, "", c), "")
	}

	t.Run("absent claims", func(t *testing.T) {
		c := verify(claims())
		if c.Apps != nil || !c.AllowsApp("any-app") {
			t.Errorf("absent apps: Apps = %#v, AllowsApp = false; want nil and any app allowed", c.Apps)
		}
		if c.AllowsPublishApp("app") || c.AllowsPublish("app", "alice") {
			t.Error("absent publish allows publishing")
		}
		if !c.AllowsFeed("alice") || c.AllowsFeed("bob") {
			t.Error("AllowsFeed: want own feed only")
		}
	})
	t.Run("string form", func(t *testing.T) {
		c := verify(claims(set("apps", "chat"), set("feeds", "team"), set("publish", "chat")))
		if !c.AllowsApp("chat") || c.AllowsApp("other") {
			t.Errorf("apps %q: AllowsApp wrong", c.Apps)
		}
		if !c.AllowsFeed("team") || !c.AllowsFeed("alice") || c.AllowsFeed("other") {
			t.Errorf("feeds %q: AllowsFeed wrong", c.Feeds)
		}
		if !c.AllowsPublish("chat", "alice") || c.AllowsPublish("other", "alice") {
			t.Errorf("publish %q: AllowsPublish wrong", c.Publish)
		}
	})
	t.Run("list form and publish star", func(t *testing.T) {
		c := verify(claims(set("apps", []string{"a", "b"}), set("feeds", []string{"t1", "t2"}), set("publish", []string{"*"})))
		if !c.AllowsApp("b") || !c.AllowsFeed("t2") || !c.AllowsPublish("b", "t2") {
			t.Errorf("claims %+v: a listed grant is refused", c)
		}
		// apps bounds publishing too: "*" is every app the token may use.
		if c.AllowsPublishApp("whatever") || c.AllowsPublish("whatever", "t2") {
			t.Errorf("claims %+v: publishing allowed into an app outside the apps claim", c)
		}
		c = verify(claims(set("apps", []string{"a"}), set("publish", []string{"*:*", "z", "z:*"})))
		if c.AllowsPublish("z", "anyone") || !c.AllowsPublish("a", "anyone") {
			t.Errorf("claims %+v: \"*:*\" with apps [a] must reach app a and no other", c)
		}
	})
	t.Run("publish feeds", func(t *testing.T) {
		tests := []struct {
			publish   []string
			app, feed string
			want      bool
		}{
			{[]string{"chat"}, "chat", "alice", true},   // own feed
			{[]string{"chat"}, "chat", "team", true},    // a feed it may read
			{[]string{"chat"}, "chat", "bob", false},    // someone else's
			{[]string{"chat"}, "other", "alice", false}, // another app
			{[]string{"*"}, "other", "team", true},
			{[]string{"*"}, "other", "bob", false},
			{[]string{"chat:*"}, "chat", "bob", true},
			{[]string{"chat:*"}, "other", "alice", false},
			{[]string{"chat", "chat:*"}, "chat", "bob", true}, // the wider grant wins, whatever the order
			{[]string{"*", "chat:*"}, "other", "bob", false},
			{[]string{"*:*"}, "other", "bob", true},
			{[]string{"*:*"}, "other", "a.b", false}, // never a wildcard
			{[]string{"chat:x"}, "chat", "alice", false},
		}
		for _, tt := range tests {
			c := verify(claims(set("feeds", "team"), set("publish", tt.publish)))
			if got := c.AllowsPublish(tt.app, tt.feed); got != tt.want {
				t.Errorf("publish %q: AllowsPublish(%q, %q) = %v, want %v", tt.publish, tt.app, tt.feed, got, tt.want)
			}
		}
	})
	t.Run("empty apps allows none", func(t *testing.T) {
		if c := verify(claims(set("apps", []string{}))); c.AllowsApp("a") {
			t.Error("apps [] allows an app")
		}
	})
	t.Run("wildcards never match", func(t *testing.T) {
		c := verify(claims(set("feeds", []string{"*", ">"}), set("publish", "*")))
		for _, s := range []string{"*", ">", "a.b", "", "a b"} {
			if c.AllowsApp(s) || c.AllowsFeed(s) || c.AllowsPublishApp(s) || c.AllowsPublish(s, "alice") || c.AllowsPublish("a", s) {
				t.Errorf("%q is allowed", s)
			}
		}
	})
	t.Run("wrong type is malformed", func(t *testing.T) {
		checkVerify(t, v, sign(t, jwt.SigningMethodHS256, secret, "", claims(set("apps", 5))), "token malformed")
	})
}

func TestSign(t *testing.T) {
	v := newVerifier(t, auth.Config{Secret: secret, RequireExp: true})
	in := auth.Claims{Apps: []string{}, Feeds: []string{"team"}, Publish: []string{"chat"}}
	in.Subject = "alice"
	in.ExpiresAt = jwt.NewNumericDate(time.Now().Add(time.Minute))
	tok, err := auth.Sign(secret, in)
	if err != nil {
		t.Fatal(err)
	}
	c := checkVerify(t, v, tok, "")
	// An empty apps list must survive signing: dropped, it would read as "any app".
	// With no app, the publish grant reaches none either.
	if c.Apps == nil || c.AllowsApp("chat") || !c.AllowsFeed("team") || c.AllowsPublish("chat", "team") || !slices.Equal(c.Publish, in.Publish) {
		t.Errorf("round trip gave %+v", c)
	}

	if _, err := auth.Sign(nil, in); !errors.Is(err, auth.ErrNoKey) {
		t.Errorf("Sign without secret: %v, want ErrNoKey", err)
	}
	in.Subject = "a.b"
	if _, err := auth.Sign(secret, in); !errors.Is(err, auth.ErrInvalidToken) {
		t.Errorf("Sign with bad sub: %v, want ErrInvalidToken", err)
	}
}

func TestTokenFromRequest(t *testing.T) {
	tests := []struct {
		name           string
		header         []string // Authorization values
		query, cookie  string
		allowQ, allowC bool
		wantTok        string
		wantOK         bool
	}{
		{"header", []string{"Bearer h"}, "", "", true, true, "h", true},
		{"header beats query and cookie", []string{"Bearer h"}, "q", "c", true, true, "h", true},
		{"scheme case-insensitive", []string{"bEaReR h"}, "", "", false, false, "h", true},
		{"query beats cookie", nil, "q", "c", true, true, "q", true},
		{"cookie last", nil, "", "c", true, true, "c", true},
		{"query off", nil, "q", "c", false, true, "c", true},
		{"query off, no cookie", nil, "q", "", false, true, "", false},
		{"cookie off", nil, "", "c", true, false, "", false},
		{"both off", nil, "q", "c", false, false, "", false},
		{"empty query falls to cookie", nil, "", "c", true, true, "c", true},
		{"none", nil, "", "", true, true, "", false},
		{"other scheme, no fallback", []string{"Basic dTpw"}, "q", "c", true, true, "", false},
		{"bearer without token, no fallback", []string{"Bearer"}, "q", "c", true, true, "", false},
		{"bearer with blank token", []string{"Bearer  "}, "q", "c", true, true, "", false},
		{"token with space", []string{"Bearer a b"}, "", "", true, true, "", false},
		{"empty header", []string{""}, "q", "", true, true, "", false},
		{"two headers", []string{"Bearer a", "Bearer b"}, "", "", true, true, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			target := "/v1/events?app_id=a"
			if tt.query != "" {
				target += "&access_token=" + tt.query
			}
			r := httptest.NewRequest(http.MethodGet, target, nil)
			for _, h := range tt.header {
				r.Header.Add("Authorization", h)
			}
			if tt.cookie != "" {
				r.AddCookie(&http.Cookie{Name: "sserelay_token", Value: tt.cookie})
			}
			tok, ok := auth.TokenFromRequest(r, tt.allowQ, tt.allowC)
			if tok != tt.wantTok || ok != tt.wantOK {
				t.Errorf("TokenFromRequest = %q, %v; want %q, %v", tok, ok, tt.wantTok, tt.wantOK)
			}
			if tt.allowQ {
				// The query parsed by the caller: the same answer.
				if tok, ok := auth.TokenFromRequestQuery(r, r.URL.Query(), tt.allowC); tok != tt.wantTok || ok != tt.wantOK {
					t.Errorf("TokenFromRequestQuery = %q, %v; want %q, %v", tok, ok, tt.wantTok, tt.wantOK)
				}
			}
		})
	}
}

func BenchmarkVerifyHS256(b *testing.B) {
	v := newVerifier(b, auth.Config{Secret: secret, RequireExp: true})
	tok := sign(b, jwt.SigningMethodHS256, secret, "", jwt.MapClaims{
		"sub": "alice", "exp": time.Now().Add(time.Hour).Unix(),
		"apps": []string{"chat"}, "feeds": []string{"team"},
	})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(tok); err != nil {
			b.Fatal(err)
		}
	}
}
