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
	// defaultJWKSRefresh is how old the cached keys may grow before the refresher refetches them.
	defaultJWKSRefresh = 5 * time.Minute
	// jwksMissInterval limits refetches caused by unknown kids, which anyone can send at will: at
	// most one per interval, 8,640 a day, nothing for a key server, while a key rotated in just
	// after a forged kid's refetch is found within the interval.
	jwksMissInterval = 10 * time.Second
	// jwksMissWait bounds how long a token with an unknown kid waits for the refetch it is owed:
	// long enough for a key server that answers, short enough that one that hangs holds no
	// request for the whole fetch timeout.
	jwksMissWait = 3 * time.Second
	// jwksRetryInterval is the wait after a failed refetch, so that an endpoint that is down gets
	// a request every so often, not a storm, while the stale keys keep working.
	jwksRetryInterval = 30 * time.Second
	// jwksTimeout bounds one fetch even when the caller's http.Client has no timeout.
	jwksTimeout = 10 * time.Second
	// maxJWKSBytes bounds the body read: a key set is a few kilobytes.
	maxJWKSBytes = 1 << 20
)

// errUnknownKey is the keyfunc's error when no key fits the token's kid and alg.
var errUnknownKey = errors.New("no key for the token's kid")

// errRefetchPending says that the refetch for an unknown kid did not end within jwksMissWait.
var errRefetchPending = errors.New("JWKS refetch still running")

// jwksKeys is one fetched key set; it is replaced whole, never changed, so readers need no lock.
type jwksKeys struct {
	byKID map[string]publicKey
	all   []publicKey
}

// jwksSource caches the keys of a JWKS endpoint. Its refresher goroutine (started by start,
// ended by close) refetches them when they are due and when an unknown kid asks for it, so that
// Verify never waits on the key server for keys it already has.
type jwksSource struct {
	url          string
	client       *http.Client
	refresh      time.Duration
	missInterval time.Duration
	missWait     time.Duration

	keys atomic.Pointer[jwksKeys]

	kick   chan struct{} // capacity 1: fetch now
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{} // closed when the refresher returns

	mu       sync.Mutex
	nextMiss time.Time     // when an unknown kid may trigger a refetch again
	next     chan struct{} // closed when the next fetch to start has ended
	miss     chan struct{} // the next of the latest refetch for an unknown kid
}

// start runs the refresher until close.
func (s *jwksSource) start() {
	s.kick = make(chan struct{}, 1)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.done = make(chan struct{})
	s.next = make(chan struct{})
	go s.run()
}

// close stops the refresher, cancelling a fetch in flight, and waits for it.
func (s *jwksSource) close() {
	s.cancel()
	<-s.done
}

// run fetches the keys every refresh interval (every retry interval after a failure, if
// shorter) and whenever kicked, until close.
func (s *jwksSource) run() {
	defer close(s.done)
	t := time.NewTimer(s.refresh)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		case <-s.kick:
		}
		s.mu.Lock()
		ended := s.next
		s.next = make(chan struct{})
		s.mu.Unlock()
		err := s.fetch(s.ctx) // on failure the stale keys stay in use
		close(ended)
		wait := s.refresh
		if err != nil {
			wait = min(wait, jwksRetryInterval)
		}
		t.Reset(wait)
	}
}

// keyFor returns the key (or, for a token without kid, the set of keys) that may verify a token
// with this kid and alg.
func (s *jwksSource) keyFor(kid, alg string) (any, error) {
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

// refetchForMiss has the refresher refetch the keys for an unknown kid (the issuer may have
// rotated) at most once per missInterval, waits up to missWait for that fetch to end, and looks
// the kid up again. Tokens that miss while such a refetch runs wait for the same one: after a
// rotation, everyone's first token with the new key arrives at about the same time.
func (s *jwksSource) refetchForMiss(kid string) (publicKey, bool, error) {
	s.mu.Lock()
	now := time.Now()
	if !now.Before(s.nextMiss) {
		s.nextMiss = now.Add(s.missInterval)
		s.miss = s.next // a fetch that starts after this point
		select {
		case s.kick <- struct{}{}:
		default: // a kick is already pending: the same fetch serves us
		}
	}
	ended := s.miss
	s.mu.Unlock()
	if ended == nil {
		return publicKey{}, false, nil
	}
	t := time.NewTimer(s.missWait)
	defer t.Stop()
	select {
	case <-ended:
	case <-t.C:
		return publicKey{}, false, errRefetchPending
	case <-s.done:
		return publicKey{}, false, errors.New("verifier closed")
	}
	k, ok := s.keys.Load().byKID[kid]
	return k, ok, nil
}

// fetch gets and installs the key set. Only NewVerifier (before the refresher starts) and the
// refresher call it. On failure the previous keys stay installed.
func (s *jwksSource) fetch(ctx context.Context) error {
	keys, err := s.get(ctx)
	if err == nil {
		s.keys.Store(keys)
	}
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
