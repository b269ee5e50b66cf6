package keyring

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/spiffe-sts/spiffe-sts/issuer/keyring/seal"
)

// ParseAlgorithm returns alg if it is ES256, EdDSA or RS256.
func ParseAlgorithm(alg string) (string, error) {
	switch alg {
	case ES256, EdDSA, RS256:
		return alg, nil
	}
	return "", fmt.Errorf("keyring: unsupported algorithm %q (want ES256, EdDSA or RS256)", alg)
}

// generateKey creates a private key for alg with the stdlib.
func generateKey(alg string) (crypto.Signer, error) {
	var key crypto.Signer
	var err error
	switch alg {
	case ES256:
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case EdDSA:
		_, key, err = ed25519.GenerateKey(rand.Reader)
	case RS256:
		key, err = rsa.GenerateKey(rand.Reader, MinRSABits)
	default:
		_, err = ParseAlgorithm(alg)
	}
	if err != nil {
		return nil, fmt.Errorf("keyring: generate %s key: %w", alg, err)
	}
	return key, nil
}

// checkKey reports whether key is the kind of key alg signs with: P-256
// for ES256 (RFC 7518 §3.4), Ed25519 for EdDSA (RFC 8037 §3.1), RSA of at
// least MinRSABits for RS256 (RFC 7518 §3.3).
func checkKey(alg string, key any) error {
	switch k := key.(type) {
	case *ecdsa.PrivateKey:
		if alg == ES256 && k.Curve == elliptic.P256() {
			return nil
		}
		return fmt.Errorf("an ECDSA %s key cannot sign %s", k.Curve.Params().Name, alg)
	case ed25519.PrivateKey:
		if alg == EdDSA {
			return nil
		}
		return fmt.Errorf("an Ed25519 key cannot sign %s", alg)
	case *rsa.PrivateKey:
		if alg != RS256 {
			return fmt.Errorf("an RSA key cannot sign %s", alg)
		}
		if bits := k.N.BitLen(); bits < MinRSABits {
			return fmt.Errorf("an RSA key of %d bits is shorter than %d", bits, MinRSABits)
		}
		return nil
	}
	return fmt.Errorf("%T cannot sign %s", key, alg)
}

// additionalData binds a sealed key to its record: seq, kid and
// algorithm, each length-prefixed so that no two records share it.
func additionalData(seq int64, kid, alg string) []byte {
	b := []byte("spiffe-sts keyring v1\x00")
	b = binary.BigEndian.AppendUint64(b, uint64(seq))
	for _, s := range []string{kid, alg} {
		b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
		b = append(b, s...)
	}
	return b
}

// sealKey encodes key as PKCS#8 DER and seals it for its record; without
// a KEK it returns the DER.
func sealKey(kek *seal.KEK, seq int64, kid, alg string, key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("keyring: encode %s key: %w", alg, err)
	}
	if kek == nil {
		return der, nil
	}
	return kek.Seal(der, additionalData(seq, kid, alg))
}

// openRecord returns the signer sealed in r, checking that it opens under
// kek bound to r's seq, kid and algorithm, that it is PKCS#8 of the type
// r.Algorithm needs, and that keyID of its public key is r.KeyID. Errors
// are *RecordError; none quotes key material.
func openRecord(kek *seal.KEK, keyID func(crypto.PublicKey) (string, error), r Record) (crypto.Signer, error) {
	fail := func(err error) (crypto.Signer, error) {
		return nil, &RecordError{Seq: r.Seq, KeyID: r.KeyID, Err: err}
	}
	if _, err := ParseAlgorithm(r.Algorithm); err != nil {
		return fail(errors.New("unsupported algorithm"))
	}
	if r.Activate.IsZero() {
		return fail(errors.New("no activation time"))
	}
	der := r.SealedKey
	switch {
	case kek != nil && !seal.IsSealed(der):
		return fail(errors.New("private key is not sealed, but the ring has a key-encryption key"))
	case kek == nil && seal.IsSealed(der):
		return fail(errors.New("private key is sealed, but the ring has no key-encryption key"))
	case kek != nil:
		var err error
		if der, err = kek.Open(der, additionalData(r.Seq, r.KeyID, r.Algorithm)); err != nil {
			return fail(errors.New("private key does not decrypt under the key-encryption key for this seq, kid and algorithm (wrong key-encryption key, or a tampered or copied record)"))
		}
	}
	key, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return fail(errors.New("private key is not PKCS#8"))
	}
	if err := checkKey(r.Algorithm, key); err != nil {
		return fail(err)
	}
	signer := key.(crypto.Signer) // every type checkKey accepts is one
	kid, err := keyID(signer.Public())
	if err != nil {
		return fail(fmt.Errorf("key ID: %w", err))
	}
	if kid != r.KeyID {
		return fail(fmt.Errorf("kid does not match the key (its thumbprint is %q)", kid))
	}
	return signer, nil
}
