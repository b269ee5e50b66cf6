package jwtcheck

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
)

// Errors of the key provider, wrapped with detail by jws.Verify; match
// them with errors.Is.
var (
	// ErrNoKeyID means the JWS header has no "kid".
	ErrNoKeyID = errors.New("jwtcheck: token has no kid")
	// ErrAlgorithm means the header's "alg" is not accepted, or is not the
	// algorithm of the key its "kid" names.
	ErrAlgorithm = errors.New("jwtcheck: algorithm not accepted")
)

// IsCompactJWS reports whether raw has the shape of a JWS compact
// serialization (RFC 7515 §7.1): three non-empty base64url parts separated
// by dots. The JSON serialization (which could carry several signatures),
// an unsigned JWT and a detached payload are refused before any parsing.
func IsCompactJWS(raw string) bool {
	dots, last := 0, -1
	for k := 0; k < len(raw); k++ {
		switch c := raw[k]; {
		case c == '.':
			if k == last+1 {
				return false // empty part
			}
			dots++
			last = k
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	return dots == 2 && last < len(raw)-1
}

// KeySet finds the public key a token's "kid" names.
// accesstoken.KeySet is one.
type KeySet interface {
	LookupKey(ctx context.Context, kid string) (jwk.Key, error)
}

// KeyProvider returns the jws.KeyProvider of a verifier that accepts the
// algorithms algs with the keys of keys. For each signature it requires a
// "kid" (RFC 7515 §4.1.4) and an "alg" (RFC 7515 §4.1.1) among algs, looks
// the kid up in keys, and insists that alg is the key's own "alg", so a
// token cannot choose how it is verified. An unaccepted alg fails before
// the lookup, so it cannot make a remote key set fetch. Create it once per
// verifier and reuse it.
func KeyProvider(keys KeySet, algs []jwa.SignatureAlgorithm) jws.KeyProvider {
	p := &keyProvider{keys: keys, algs: slices.Clone(algs)}
	return jws.KeyProviderFunc(p.fetchKeys)
}

type keyProvider struct {
	keys KeySet
	algs []jwa.SignatureAlgorithm
}

func (p *keyProvider) fetchKeys(ctx context.Context, sink jws.KeySink, sig *jws.Signature, _ *jws.Message) error {
	hdr := sig.ProtectedHeaders()
	kid, _ := hdr.KeyID()
	if kid == "" {
		return ErrNoKeyID
	}
	alg, _ := hdr.Algorithm()
	if !slices.Contains(p.algs, alg) {
		return fmt.Errorf("%w: %q", ErrAlgorithm, alg)
	}
	key, err := p.keys.LookupKey(ctx, kid)
	if err != nil {
		return err
	}
	if keyAlg := KeyAlgorithm(key); keyAlg != alg.String() {
		return fmt.Errorf("%w: %q, key %q has %q", ErrAlgorithm, alg, kid, keyAlg)
	}
	// jws.Verify given a jwk.Key converts it with more work than one
	// jwk.Export; the raw public key saves about 20 allocations a token.
	var raw any
	if err := jwk.Export(key, &raw); err != nil {
		return fmt.Errorf("jwtcheck: key %q: %w", kid, err)
	}
	sink.Key(alg, raw)
	return nil
}

// KeyAlgorithm returns the "alg" of key (RFC 7517 §4.4), "" when it has
// none.
func KeyAlgorithm(key jwk.Key) string {
	if alg, ok := key.Algorithm(); ok && alg != nil {
		return alg.String()
	}
	return ""
}

// Deadline returns the instant from which a token whose "exp" is exp is
// expired, with leeway tolerated (RFC 7519 §4.1.4).
func Deadline(exp int64, leeway time.Duration) time.Time {
	return time.Unix(exp, 0).Add(leeway)
}

// Expired reports whether a token whose "exp" is exp must be refused at
// now, leeway tolerated: "the current date/time MUST be before the
// expiration date/time" (RFC 7519 §4.1.4). An exp of 0 (absent) or less
// is expired, whatever the leeway.
func Expired(now time.Time, exp int64, leeway time.Duration) bool {
	return exp <= 0 || !now.Before(Deadline(exp, leeway))
}

// NotYetValid reports whether a token whose "nbf" is nbf must be refused
// at now, leeway tolerated: "the current date/time MUST be after or equal
// to the not-before date/time" (RFC 7519 §4.1.5). An nbf of 0 (absent) is
// always valid.
func NotYetValid(now time.Time, nbf int64, leeway time.Duration) bool {
	return now.Add(leeway).Before(time.Unix(nbf, 0))
}

// CheckScopeToken checks that scope is an RFC 6749 §3.3 scope-token:
//
//	scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
//
// A scope-token can also be written inside an RFC 6750 §3 quoted scope
// attribute, since it excludes '"' and '\'. A scope of white space only
// is reported as empty.
func CheckScopeToken(scope string) error {
	if strings.TrimSpace(scope) == "" {
		return errors.New("empty scope")
	}
	if c, bad := invalidScopeChar(scope); bad {
		return fmt.Errorf("scope %q contains %q, which RFC 6749 §3.3 does not allow", scope, c)
	}
	return nil
}

// IsScopeToken reports whether scope is an RFC 6749 §3.3 scope-token (see
// CheckScopeToken), without building an error.
func IsScopeToken(scope string) bool {
	_, bad := invalidScopeChar(scope)
	return scope != "" && !bad
}

// invalidScopeChar returns the first character of scope that a
// scope-token cannot hold.
func invalidScopeChar(scope string) (rune, bool) {
	for _, c := range scope {
		if c < 0x21 || c == 0x22 || c == 0x5C || c > 0x7E {
			return c, true
		}
	}
	return 0, false
}
