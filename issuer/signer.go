package issuer

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"fmt"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
)

// Signer is a signing key: a crypto.Signer plus its JOSE identity. It must be
// safe for concurrent use.
type Signer interface {
	crypto.Signer
	// KeyID returns the "kid" of the key: its RFC 7638 JWK thumbprint
	// (SHA-256, unpadded base64url) of the public key.
	KeyID() string
	// Algorithm returns the JWS "alg" the key signs with: ES256 (P-256),
	// EdDSA (Ed25519) or RS256 (RSA of at least 2048 bits).
	Algorithm() jwa.SignatureAlgorithm
}

// MinRSABits is the smallest RSA modulus NewSigner accepts for RS256.
const MinRSABits = 2048

// ParseAlgorithm maps "ES256", "EdDSA" and "RS256" (case-sensitive, as in
// RFC 7518 §3.1 and RFC 8037 §3.1) to their jwa values. Any other value is an
// error.
func ParseAlgorithm(s string) (jwa.SignatureAlgorithm, error) {
	switch s {
	case jwa.ES256().String():
		return jwa.ES256(), nil
	case jwa.EdDSA().String():
		return jwa.EdDSA(), nil
	case jwa.RS256().String():
		return jwa.RS256(), nil
	}
	return jwa.EmptySignatureAlgorithm(), fmt.Errorf("issuer: unsupported signature algorithm %q (want ES256, EdDSA or RS256)", s)
}

// NewSigner wraps key as a Signer for alg. It checks that the key type
// matches alg (a P-256 ECDSA key for ES256, an Ed25519 key for EdDSA, an RSA
// key of at least MinRSABits for RS256) and computes the key ID as the
// RFC 7638 thumbprint of the public key. key may be any crypto.Signer, such
// as a handle to a key held in an HSM.
func NewSigner(key crypto.Signer, alg jwa.SignatureAlgorithm) (Signer, error) {
	if key == nil {
		return nil, errors.New("issuer: key is nil")
	}
	alg, err := ParseAlgorithm(alg.String())
	if err != nil {
		return nil, err
	}
	pub := key.Public()
	if err := checkKeyType(pub, alg); err != nil {
		return nil, err
	}
	kid, err := thumbprint(pub)
	if err != nil {
		return nil, err
	}
	return &signer{Signer: key, kid: kid, alg: alg}, nil
}

// GenerateSigner creates a fresh key for alg that lives only in memory: the
// in-memory key backend. RS256 keys have MinRSABits bits.
func GenerateSigner(alg jwa.SignatureAlgorithm) (Signer, error) {
	alg, err := ParseAlgorithm(alg.String())
	if err != nil {
		return nil, err
	}
	var key crypto.Signer
	switch alg {
	case jwa.ES256():
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case jwa.EdDSA():
		_, key, err = ed25519.GenerateKey(rand.Reader)
	case jwa.RS256():
		key, err = rsa.GenerateKey(rand.Reader, MinRSABits)
	}
	if err != nil {
		return nil, fmt.Errorf("issuer: generate %s key: %w", alg, err)
	}
	return NewSigner(key, alg)
}

// PublicJWK returns the public key of s as a JWK (RFC 7517) with "kid",
// "alg" and "use": "sig" set, ready for a JWKS document.
func PublicJWK(s Signer) (jwk.Key, error) {
	return publicJWK(s.Public(), s.KeyID(), s.Algorithm())
}

// signer is the Signer returned by NewSigner.
type signer struct {
	crypto.Signer
	kid string
	alg jwa.SignatureAlgorithm
}

func (s *signer) KeyID() string                     { return s.kid }
func (s *signer) Algorithm() jwa.SignatureAlgorithm { return s.alg }

// checkKeyType reports whether pub is the kind of key alg signs with.
func checkKeyType(pub crypto.PublicKey, alg jwa.SignatureAlgorithm) error {
	var ok bool
	var want string
	switch alg {
	case jwa.ES256():
		k, isEC := pub.(*ecdsa.PublicKey)
		ok, want = isEC && k.Curve == elliptic.P256(), "a P-256 ECDSA key"
	case jwa.EdDSA():
		k, isEd := pub.(ed25519.PublicKey)
		ok, want = isEd && len(k) == ed25519.PublicKeySize, "an Ed25519 key"
	case jwa.RS256():
		k, isRSA := pub.(*rsa.PublicKey)
		ok, want = isRSA && k.N.BitLen() >= MinRSABits, fmt.Sprintf("an RSA key of at least %d bits", MinRSABits)
	}
	if !ok {
		return fmt.Errorf("issuer: %s needs %s, got %s", alg, want, describeKey(pub))
	}
	return nil
}

// describeKey names the type and size of pub for error messages.
func describeKey(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return "ECDSA " + k.Curve.Params().Name
	case ed25519.PublicKey:
		return "Ed25519"
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA-%d", k.N.BitLen())
	}
	return fmt.Sprintf("%T", pub)
}

// thumbprint returns the RFC 7638 §3 JWK thumbprint of pub with SHA-256,
// unpadded base64url encoded, as used for "kid".
func thumbprint(pub crypto.PublicKey) (string, error) {
	key, err := jwk.Import(pub)
	if err != nil {
		return "", fmt.Errorf("issuer: public key as JWK: %w", err)
	}
	sum, err := key.Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("issuer: JWK thumbprint: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(sum), nil
}
