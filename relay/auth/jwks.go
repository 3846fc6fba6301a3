package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

const (
	// defaultJWKSRefresh is how old the cached keys may grow before a Verify refetches them.
	defaultJWKSRefresh = 5 * time.Minute
	// jwksMissInterval limits refetches caused by unknown kids, which anyone can send at will.
	jwksMissInterval = 30 * time.Second
	// jwksRetryInterval is the wait after a failed refetch, so that an endpoint that is down
	// does not add a request to every Verify while the stale keys keep working.
	jwksRetryInterval = 30 * time.Second
	// jwksTimeout bounds one fetch even when the caller's http.Client has no timeout, because a
	// refetch runs inside Verify.
	jwksTimeout = 10 * time.Second
	// maxJWKSBytes bounds the body read: a key set is a few kilobytes.
	maxJWKSBytes = 1 << 20
)

// errUnknownKey is the keyfunc's error when no key fits the token's kid and alg.
var errUnknownKey = errors.New("no key for the token's kid")

// jwksKeys is one fetched key set; it is replaced whole, never changed, so readers need no lock.
type jwksKeys struct {
	byKID map[string]publicKey
	all   []publicKey
}

// jwksSource caches the keys of a JWKS endpoint and refetches them lazily from Verify, so that
// the package owns no goroutine.
type jwksSource struct {
	url          string
	client       *http.Client
	refresh      time.Duration
	missInterval time.Duration

	keys atomic.Pointer[jwksKeys]

	// fetchMu serialises fetches: a burst of requests makes one request to the endpoint.
	fetchMu sync.Mutex

	mu          sync.Mutex // guards the two times below
	nextRefresh time.Time  // when the cached keys are due for a refetch
	nextMiss    time.Time  // when an unknown kid may trigger a refetch again
}

// keyFor returns the key (or, for a token without kid, the set of keys) that may verify a token
// with this kid and alg.
func (s *jwksSource) keyFor(kid, alg string) (any, error) {
	s.refreshIfDue()
	if kid == "" {
		// Without a kid, try every key of the token's algorithm: single-key issuers often omit it.
		var set []jwt.VerificationKey
		for _, k := range s.keys.Load().all {
			if k.alg == alg {
				set = append(set, k.key)
			}
		}
		if len(set) == 0 {
			return nil, errUnknownKey
		}
		return jwt.VerificationKeySet{Keys: set}, nil
	}
	k, ok := s.keys.Load().byKID[kid]
	if !ok {
		var err error
		if k, ok, err = s.refetchForMiss(kid); !ok {
			return nil, errors.Join(errUnknownKey, err)
		}
	}
	if k.alg != alg {
		return nil, errAlgMismatch
	}
	return k.key, nil
}

// refreshIfDue refetches the keys when they are older than the refresh interval. If another
// fetch is already running it returns at once: the cached keys are still good meanwhile.
func (s *jwksSource) refreshIfDue() {
	if !s.due() || !s.fetchMu.TryLock() {
		return
	}
	defer s.fetchMu.Unlock()
	if s.due() { // another fetch may have finished between the check and the lock
		_ = s.fetch(context.Background()) // on failure the stale keys stay in use
	}
}

func (s *jwksSource) due() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !time.Now().Before(s.nextRefresh)
}

// refetchForMiss refetches the keys for an unknown kid (the issuer may have rotated), at most
// once per missInterval, and looks the kid up again.
func (s *jwksSource) refetchForMiss(kid string) (publicKey, bool, error) {
	s.mu.Lock()
	now := time.Now()
	allowed := !now.Before(s.nextMiss)
	if allowed {
		s.nextMiss = now.Add(s.missInterval)
	}
	s.mu.Unlock()
	if !allowed {
		return publicKey{}, false, nil
	}
	s.fetchMu.Lock()
	defer s.fetchMu.Unlock()
	if k, ok := s.keys.Load().byKID[kid]; ok { // fetched by someone else while we waited
		return k, true, nil
	}
	if err := s.fetch(context.Background()); err != nil {
		return publicKey{}, false, err
	}
	k, ok := s.keys.Load().byKID[kid]
	return k, ok, nil
}

// fetch gets and installs the key set. The caller holds fetchMu. On failure the previous keys
// stay installed and the next age-based attempt is pushed back by jwksRetryInterval.
func (s *jwksSource) fetch(ctx context.Context) error {
	keys, err := s.get(ctx)
	next := s.refresh
	if err != nil {
		next = min(next, jwksRetryInterval)
	} else {
		s.keys.Store(keys)
	}
	s.mu.Lock()
	s.nextRefresh = time.Now().Add(next)
	s.mu.Unlock()
	return err
}

// get fetches and parses the key set.
func (s *jwksSource) get(ctx context.Context) (*jwksKeys, error) {
	ctx, cancel := context.WithTimeout(ctx, jwksTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return nil, fmt.Errorf("JWKS request: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("JWKS fetch: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("JWKS fetch: %s", resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, fmt.Errorf("JWKS fetch: %w", err)
	}
	if len(body) > maxJWKSBytes {
		return nil, fmt.Errorf("JWKS larger than %d bytes", maxJWKSBytes)
	}
	return parseJWKS(body)
}

// jwk is one JSON Web Key (RFC 7517), with the members the relay's algorithms need.
type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	Crv string `json:"crv"`
	N   string `json:"n"`
	E   string `json:"e"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

// parseJWKS decodes a key set. Keys the relay cannot use (encryption keys, other algorithms or
// curves) are skipped rather than failing the set, since issuers publish them side by side; a
// set with no usable key at all is an error, as it would refuse every token.
func parseJWKS(body []byte) (*jwksKeys, error) {
	var doc struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("JWKS decode: %w", err)
	}
	keys := &jwksKeys{byKID: make(map[string]publicKey)}
	for _, j := range doc.Keys {
		if j.Use != "" && j.Use != "sig" {
			continue
		}
		pub, err := j.publicKey()
		if err != nil {
			continue
		}
		k, err := newPublicKey(pub)
		if err != nil || (j.Alg != "" && j.Alg != k.alg) {
			continue
		}
		keys.all = append(keys.all, k)
		if _, dup := keys.byKID[j.Kid]; j.Kid != "" && !dup {
			keys.byKID[j.Kid] = k
		}
	}
	if len(keys.all) == 0 {
		return nil, errors.New("JWKS has no usable RS256, ES256 or EdDSA key")
	}
	return keys, nil
}

// publicKey builds the Go public key a JWK describes.
func (j jwk) publicKey() (crypto.PublicKey, error) {
	switch j.Kty {
	case "RSA":
		n, err := b64(j.N)
		if err != nil {
			return nil, err
		}
		e, err := b64(j.E)
		if err != nil {
			return nil, err
		}
		if len(e) == 0 || len(e) > 4 {
			return nil, errors.New("bad RSA exponent")
		}
		exp := new(big.Int).SetBytes(e)
		return &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(exp.Int64())}, nil
	case "EC":
		if j.Crv != "P-256" {
			return nil, fmt.Errorf("unsupported curve %q", j.Crv)
		}
		x, err := b64(j.X)
		if err != nil {
			return nil, err
		}
		y, err := b64(j.Y)
		if err != nil {
			return nil, err
		}
		if len(x) != 32 || len(y) != 32 {
			return nil, errors.New("bad P-256 coordinates")
		}
		// ParseUncompressedPublicKey also checks that the point is on the curve.
		return ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
	case "OKP":
		if j.Crv != "Ed25519" {
			return nil, fmt.Errorf("unsupported curve %q", j.Crv)
		}
		x, err := b64(j.X)
		if err != nil {
			return nil, err
		}
		if len(x) != ed25519.PublicKeySize {
			return nil, errors.New("bad Ed25519 key")
		}
		return ed25519.PublicKey(x), nil
	default:
		return nil, fmt.Errorf("unsupported key type %q", j.Kty)
	}
}

// b64 decodes base64url without padding, as RFC 7518 asks, tolerating the padding some issuers add.
func b64(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}
