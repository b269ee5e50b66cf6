package accesstoken

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/lestrrat-go/jwx/v3/jwk"

	"github.com/spiffe-sts/spiffe-sts/internal/jwtcheck"
)

// KeySet finds the public keys that verify access tokens.
type KeySet interface {
	// LookupKey returns the public key whose "kid" is kid, or an error
	// wrapping ErrUnknownKey.
	LookupKey(ctx context.Context, kid string) (jwk.Key, error)
}

// StaticKeySet is a fixed set of public keys, for tests, offline use and the
// issuer's own JWKS.
type StaticKeySet struct {
	set  jwk.Set
	byID map[string]jwk.Key
}

// NewStaticKeySet returns a key set holding the public part of every key in
// set. Each key must carry a "kid" and an "alg": the algorithm is taken from
// the key, never from a token, so a token cannot choose how it is verified.
func NewStaticKeySet(set jwk.Set) (*StaticKeySet, error) {
	public := jwk.NewSet()
	byID := make(map[string]jwk.Key, set.Len())
	for i := 0; i < set.Len(); i++ {
		key, _ := set.Key(i)
		pub, err := jwk.PublicKeyOf(key)
		if err != nil {
			return nil, fmt.Errorf("accesstoken: key %d: %w", i, err)
		}
		kid, _ := pub.KeyID()
		switch {
		case kid == "":
			return nil, fmt.Errorf("accesstoken: key %d has no kid", i)
		case jwtcheck.KeyAlgorithm(pub) == "":
			return nil, fmt.Errorf("accesstoken: key %q has no alg", kid)
		case byID[kid] != nil:
			return nil, fmt.Errorf("accesstoken: two keys have kid %q", kid)
		}
		byID[kid] = pub
		if err := public.AddKey(pub); err != nil {
			return nil, fmt.Errorf("accesstoken: key %q: %w", kid, err)
		}
	}
	return &StaticKeySet{set: public, byID: byID}, nil
}

// ParseStaticKeySet parses a JWKS document (RFC 7517 §5).
func ParseStaticKeySet(jwks []byte) (*StaticKeySet, error) {
	set, err := jwk.Parse(jwks)
	if err != nil {
		return nil, fmt.Errorf("accesstoken: parse JWKS: %w", err)
	}
	return NewStaticKeySet(set)
}

// LookupKey implements KeySet.
func (s *StaticKeySet) LookupKey(_ context.Context, kid string) (jwk.Key, error) {
	if key, ok := s.byID[kid]; ok {
		return key, nil
	}
	return nil, fmt.Errorf("%w: %q", ErrUnknownKey, kid)
}

// Len returns the number of keys.
func (s *StaticKeySet) Len() int { return len(s.byID) }

// MarshalJSON encodes the public keys as a JWKS document.
func (s *StaticKeySet) MarshalJSON() ([]byte, error) { return json.Marshal(s.set) }

// ErrUnknownKey is returned when a token names a key the key set lacks.
var ErrUnknownKey = errors.New("accesstoken: unknown signing key")
