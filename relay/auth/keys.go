package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
)

// Algorithm names as they appear in a token's alg header.
const (
	algHS256 = "HS256"
	algRS256 = "RS256"
	algES256 = "ES256"
	algEdDSA = "EdDSA"
)

// minRSABits refuses RSA keys too short to be trusted; 2048 bits is the floor of current guidance.
const minRSABits = 2048

// publicKey is a verification key with the one algorithm it may verify. Binding the algorithm
// to the key, not to the token, is what defeats alg confusion.
type publicKey struct {
	alg string
	key crypto.PublicKey
}

// newPublicKey binds pub to its algorithm, refusing key types and sizes the relay does not accept.
func newPublicKey(pub crypto.PublicKey) (publicKey, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < minRSABits {
			return publicKey{}, fmt.Errorf("RSA key of %d bits, want at least %d", n, minRSABits)
		}
		return publicKey{alg: algRS256, key: k}, nil
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return publicKey{}, fmt.Errorf("ECDSA key on %s, ES256 needs P-256", k.Curve.Params().Name)
		}
		return publicKey{alg: algES256, key: k}, nil
	case ed25519.PublicKey:
		return publicKey{alg: algEdDSA, key: k}, nil
	default:
		return publicKey{}, fmt.Errorf("unsupported public key type %T", pub)
	}
}

// readPublicKeyFile loads the first public key or certificate in a PEM file. Blocks of other
// types are skipped, so a bundle with comments or extra material still works; a private key is
// called out because pointing the relay at one is a likely, and dangerous, slip.
func readPublicKeyFile(path string) (publicKey, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return publicKey{}, err
	}
	sawPrivate := false
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		var pub crypto.PublicKey
		switch block.Type {
		case "PUBLIC KEY":
			pub, err = x509.ParsePKIXPublicKey(block.Bytes)
		case "RSA PUBLIC KEY":
			pub, err = x509.ParsePKCS1PublicKey(block.Bytes)
		case "CERTIFICATE":
			var cert *x509.Certificate
			if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
				pub = cert.PublicKey
			}
		case "PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY":
			sawPrivate = true
			continue
		default:
			continue
		}
		if err != nil {
			return publicKey{}, fmt.Errorf("%s: %w", block.Type, err)
		}
		return newPublicKey(pub)
	}
	if sawPrivate {
		return publicKey{}, errors.New("file holds a private key; give the relay the public key or certificate only")
	}
	return publicKey{}, errors.New("no PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE block found")
}
