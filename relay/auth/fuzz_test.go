package auth_test

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/golang-jwt/jwt/v5"

	"github.com/sserelay/sserelay/relay/auth"
)

// The fuzz keys are fixed, so that the committed corpus holds tokens that
// really verify: signing with HS256 and Ed25519 is deterministic.
var (
	fuzzSecret      = []byte("fuzz-signing-secret-0123456789abcdef")
	fuzzOtherSecret = []byte("fuzz-another-secret-0123456789abcdef")
	fuzzEd          = ed25519.NewKeyFromSeed([]byte("fuzz-ed25519-seed-0123456789abcd"))
	fuzzOtherEd     = ed25519.NewKeyFromSeed([]byte("fuzz-other-ed25519-seed-01234567"))
)

// fuzzSeeds are tokens for the corpus: valid ones for each key, and the
// classic forgeries (alg none, alg confusion with the public key as HMAC
// secret, a signature of the other key).
func fuzzSeeds(t testing.TB) []string {
	c := jwt.MapClaims{"sub": "alice", "apps": []string{"demo"}, "feeds": "room", "publish": "demo:*"}
	pubDER, err := x509.MarshalPKIXPublicKey(fuzzEd.Public())
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	return []string{
		sign(t, jwt.SigningMethodHS256, fuzzSecret, "", c),
		sign(t, jwt.SigningMethodEdDSA, fuzzEd, "", c),
		sign(t, jwt.SigningMethodEdDSA, fuzzEd, "k1", jwt.MapClaims{"sub": "bob", "exp": 1}),
		sign(t, jwt.SigningMethodHS256, fuzzOtherSecret, "", c),
		sign(t, jwt.SigningMethodEdDSA, fuzzOtherEd, "", c),
		sign(t, jwt.SigningMethodHS256, pubPEM, "", c),
		sign(t, jwt.SigningMethodHS256, fuzzSecret, "", jwt.MapClaims{"sub": "a.b"}),
		sign(t, jwt.SigningMethodHS256, fuzzSecret, "", jwt.MapClaims{"sub": "alice", "apps": 5}),
		unsigned(t, c),
		"", ".", "..", "a.b.c", "eyJ.eyJ.", "Bearer x.y.z",
	}
}

// FuzzVerify checks the verifier on random bytes and mutated tokens: it
// never panics, every refusal wraps ErrInvalidToken, and no token verifies
// with a key it was not signed with: verifiers holding keys nobody signed
// with accept nothing, and the right key accepts only its own algorithm.
// Corpus: testdata/fuzz/FuzzVerify.
func FuzzVerify(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	dir := f.TempDir()
	pemFile := func(name string, pub ed25519.PublicKey) string {
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			f.Fatal(err)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), 0o600); err != nil {
			f.Fatal(err)
		}
		return p
	}
	hs := newVerifier(f, auth.Config{Secret: fuzzSecret})
	ed := newVerifier(f, auth.Config{PublicKeyFile: pemFile("ed.pem", fuzzEd.Public().(ed25519.PublicKey))})
	wrong := []*auth.Verifier{
		newVerifier(f, auth.Config{Secret: fuzzOtherSecret[:len(fuzzOtherSecret)-1]}), // signs nothing
		newVerifier(f, auth.Config{PublicKeyFile: pemFile("other.pem", ed25519.NewKeyFromSeed([]byte("fuzz-unused-ed25519-seed-0123456")).Public().(ed25519.PublicKey))}),
	}
	// Not vacuous: the valid seeds verify with their key.
	seeds := fuzzSeeds(f)
	if _, err := hs.Verify(seeds[0]); err != nil {
		f.Fatalf("the HS256 seed: %v", err)
	}
	if _, err := ed.Verify(seeds[1]); err != nil {
		f.Fatalf("the EdDSA seed: %v", err)
	}
	f.Fuzz(func(t *testing.T, token string) {
		for _, v := range wrong {
			if c, err := v.Verify(token); err == nil {
				t.Fatalf("a verifier whose key signed nothing accepted %q: %+v", token, c)
			} else if !errors.Is(err, auth.ErrInvalidToken) || err.Error() == "" {
				t.Fatalf("refusal %q does not wrap ErrInvalidToken", err)
			}
		}
		for alg, v := range map[string]*auth.Verifier{"HS256": hs, "EdDSA": ed} {
			c, err := v.Verify(token)
			if err != nil {
				if !errors.Is(err, auth.ErrInvalidToken) || err.Error() == "" {
					t.Fatalf("refusal %q does not wrap ErrInvalidToken", err)
				}
				continue
			}
			tok, _, perr := jwt.NewParser().ParseUnverified(token, jwt.MapClaims{})
			if perr != nil || tok.Method.Alg() != alg {
				t.Fatalf("the %s verifier accepted %q (parsed: %v)", alg, token, perr)
			}
			if c.Subject == "" || !c.AllowsFeed(c.Subject) {
				t.Fatalf("accepted claims with sub %q", c.Subject)
			}
		}
	})
}
