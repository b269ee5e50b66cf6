package issuer

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/issuer/keyring"
)

// ErrNoSigningKey is returned by Mint, and by Issuer.Ready, when the key
// source has no key that signs now.
var ErrNoSigningKey = errors.New("issuer: no active signing key")

// KeySource supplies the issuer's keys from memory: Mint asks it for the
// signing key on every token, so both methods must be cheap and safe for
// concurrent use, and must not do I/O.
type KeySource interface {
	// SigningKey returns the key that signs now, or nil when none does.
	SigningKey() Signer
	// PublicKeys returns the keys to publish in the JWKS (RFC 7517 §5)
	// and to verify this issuer's tokens with: the signing key, and keys
	// that are about to sign or signed tokens that are still valid.
	PublicKeys() *accesstoken.StaticKeySet
}

// StaticKeys returns a KeySource with fixed keys, for tests, offline use
// and a single key kept elsewhere: signer signs every token, and extra
// public keys (each with "kid" and "alg") are published beside it, so that
// tokens they signed still verify.
func StaticKeys(signer Signer, extra ...jwk.Key) (KeySource, error) {
	if signer == nil {
		return nil, errors.New("issuer: Signer is required")
	}
	alg := signer.Algorithm()
	if _, err := ParseAlgorithm(alg.String()); err != nil {
		return nil, fmt.Errorf("issuer: Signer algorithm %q is not supported", alg)
	}
	if signer.KeyID() == "" {
		return nil, errors.New("issuer: Signer has no key ID")
	}
	keys, err := buildKeySet(signer, extra)
	if err != nil {
		return nil, err
	}
	return staticKeys{signer: signer, keys: keys}, nil
}

type staticKeys struct {
	signer Signer
	keys   *accesstoken.StaticKeySet
}

func (s staticKeys) SigningKey() Signer                    { return s.signer }
func (s staticKeys) PublicKeys() *accesstoken.StaticKeySet { return s.keys }

// KeyID returns the "kid" of a public key: its RFC 7638 §3 JWK thumbprint
// with SHA-256, unpadded base64url. Give it to keyring.Config.KeyID.
func KeyID(pub crypto.PublicKey) (string, error) { return thumbprint(pub) }

// RingKeys is the KeySource over a signing-key ring (package keyring): it
// signs with the ring's active key, switching at the key's activation time
// without a refresh, and publishes the ring's next, active and retired
// keys. Both read the Manager's in-memory snapshot; the public key set is
// rebuilt only when the ring's Version changes.
type RingKeys struct {
	ring *keyring.Manager

	signer atomic.Pointer[signer] // the last active key
	keys   atomic.Pointer[ringKeySet]
	mu     sync.Mutex // serializes rebuilds of keys
}

// ringKeySet is the public key set of one version of the ring.
type ringKeySet struct {
	version uint64
	set     *accesstoken.StaticKeySet
}

// NewRingKeys returns the KeySource over m, whose keys must carry RFC 7638
// kids (keyring.Config.KeyID = KeyID).
func NewRingKeys(m *keyring.Manager) (*RingKeys, error) {
	if m == nil {
		return nil, errors.New("issuer: key ring is nil")
	}
	r := &RingKeys{ring: m}
	if _, err := r.rebuild(); err != nil {
		return nil, err
	}
	return r, nil
}

// SigningKey implements KeySource: the ring's active key.
func (r *RingKeys) SigningKey() Signer {
	key, kid, alg := r.ring.Active()
	if key == nil {
		return nil
	}
	if s := r.signer.Load(); s != nil && s.kid == kid { // a kid is the key's thumbprint
		return s
	}
	jalg, err := ParseAlgorithm(alg)
	if err != nil {
		return nil // the ring only holds ES256, EdDSA and RS256 keys
	}
	s := &signer{Signer: key, kid: kid, alg: jalg}
	r.signer.Store(s)
	return s
}

// PublicKeys implements KeySource: the ring's published keys, as of its
// current Version. If a rebuild fails, the previous set stays.
func (r *RingKeys) PublicKeys() *accesstoken.StaticKeySet {
	v := r.ring.Version()
	if k := r.keys.Load(); k != nil && k.version == v {
		return k.set
	}
	set, err := r.rebuild()
	if err != nil {
		return r.keys.Load().set
	}
	return set
}

// rebuild builds the public key set of the ring's current version.
func (r *RingKeys) rebuild() (*accesstoken.StaticKeySet, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	v := r.ring.Version() // read before Published: the set is at least this new
	if k := r.keys.Load(); k != nil && k.version == v {
		return k.set, nil
	}
	set := jwk.NewSet()
	for _, pk := range r.ring.Published() {
		alg, err := ParseAlgorithm(pk.Algorithm)
		if err != nil {
			return nil, err
		}
		key, err := publicJWK(pk.Public, pk.KeyID, alg)
		if err != nil {
			return nil, err
		}
		if err := set.AddKey(key); err != nil {
			return nil, fmt.Errorf("issuer: key set: %w", err)
		}
	}
	keys, err := accesstoken.NewStaticKeySet(set)
	if err != nil {
		return nil, fmt.Errorf("issuer: key set: %w", err)
	}
	r.keys.Store(&ringKeySet{version: v, set: keys})
	return keys, nil
}

// KeySet is the issuer's public key set as it is now: every call reads
// the key source, so the JWKS and the verification of the issuer's own
// tokens follow key rotation. It implements accesstoken.KeySet and
// json.Marshaler.
type KeySet struct {
	src  KeySource
	jwks atomic.Pointer[encodedKeySet]
}

// encodedKeySet is the JWKS document of one key set.
type encodedKeySet struct {
	set *accesstoken.StaticKeySet
	doc []byte
}

// Current returns the key set in force now.
func (k *KeySet) Current() *accesstoken.StaticKeySet { return k.src.PublicKeys() }

// LookupKey implements accesstoken.KeySet with the current keys.
func (k *KeySet) LookupKey(ctx context.Context, kid string) (jwk.Key, error) {
	return k.src.PublicKeys().LookupKey(ctx, kid)
}

// Len returns the number of current keys.
func (k *KeySet) Len() int { return k.src.PublicKeys().Len() }

// MarshalJSON encodes the current public keys as a JWKS document (RFC 7517
// §5). The document is encoded once per key set; callers must not modify
// it.
func (k *KeySet) MarshalJSON() ([]byte, error) {
	set := k.src.PublicKeys()
	if e := k.jwks.Load(); e != nil && e.set == set {
		return e.doc, nil
	}
	doc, err := set.MarshalJSON()
	if err != nil {
		return nil, fmt.Errorf("issuer: JWKS: %w", err)
	}
	k.jwks.Store(&encodedKeySet{set: set, doc: doc})
	return doc, nil
}

// publicJWK returns pub as a JWK with "kid", "alg" and "use": "sig".
func publicJWK(pub crypto.PublicKey, kid string, alg jwa.SignatureAlgorithm) (jwk.Key, error) {
	key, err := jwk.Import(pub)
	if err != nil {
		return nil, fmt.Errorf("issuer: public key as JWK: %w", err)
	}
	for _, kv := range [...]struct {
		k string
		v any
	}{
		{jwk.KeyIDKey, kid},
		{jwk.AlgorithmKey, alg},
		{jwk.KeyUsageKey, jwk.ForSignature},
	} {
		if err := key.Set(kv.k, kv.v); err != nil {
			return nil, fmt.Errorf("issuer: set JWK %q: %w", kv.k, err)
		}
	}
	return key, nil
}
