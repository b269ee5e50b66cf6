package accesstoken

import (
	"context"
	"crypto/subtle"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jws"

	"github.com/spiffe-sts/spiffe-sts/internal/accesshook"
	"github.com/spiffe-sts/spiffe-sts/internal/jwtcheck"
)

// Errors returned by Verify. They are wrapped with detail; match them with
// errors.Is. An expired token is reported as *ExpiredError.
var (
	ErrMalformed        = errors.New("accesstoken: malformed token")
	ErrSignature        = errors.New("accesstoken: signature does not verify")
	ErrType             = errors.New(`accesstoken: typ header is not "at+jwt"`)
	ErrIssuer           = errors.New("accesstoken: wrong issuer")
	ErrAudience         = errors.New("accesstoken: audience not accepted")
	ErrNotYetValid      = errors.New("accesstoken: token not yet valid")
	ErrNoCertificate    = errors.New("accesstoken: no peer certificate to check the binding against")
	ErrNotBound         = errors.New("accesstoken: token is not bound to the peer certificate")
	ErrNoAudienceConfig = errors.New("accesstoken: verifier has no audiences configured")
)

// ExpiredError reports a token whose "exp" has passed.
type ExpiredError struct {
	Expiry time.Time
}

func (e *ExpiredError) Error() string {
	return "accesstoken: token expired at " + e.Expiry.UTC().Format(time.RFC3339)
}

// DefaultAlgorithms are the signature algorithms accepted when
// Config.Algorithms is empty.
var DefaultAlgorithms = []jwa.SignatureAlgorithm{jwa.ES256(), jwa.EdDSA(), jwa.RS256()}

// Config tunes a Verifier. The zero value is not useful: set Audiences.
type Config struct {
	// Audiences are the identifiers of this resource server; a token must
	// name at least one in "aud" (RFC 9068 §4).
	Audiences []string
	// InsecureSkipAudienceCheck accepts tokens for any audience.
	InsecureSkipAudienceCheck bool
	// Algorithms accepted; DefaultAlgorithms when empty.
	Algorithms []jwa.SignatureAlgorithm
	// Leeway tolerates this much clock skew on "exp" and "nbf".
	Leeway time.Duration
	// Now returns the current time; time.Now when nil.
	Now func() time.Time
	// CacheSize is how many verified tokens Verify remembers, so that a
	// token presented again skips the signature check: DefaultCacheSize
	// when zero; a negative value disables the cache.
	//
	// A hit still checks, on every call, that the token has not expired
	// (with Leeway) and that it is bound to the peer certificate it is
	// presented with, so a cached token is never accepted with another
	// certificate. What a hit does not repeat is the signature check: a
	// signing key withdrawn from the key set stops verifying new tokens at
	// once but cached tokens signed with it only when they expire (at most
	// the issuer's token lifetime).
	//
	// Memory is bounded: an entry holds the token (tokens longer than
	// MaxCachedTokenLen bytes are never cached), a copy of its claims,
	// whose strings are shorter than the token, and about 200 bytes of
	// bookkeeping; it does not keep the peer certificate alive. A typical
	// spiffe-sts token of about 700 bytes costs roughly 1.5 KiB, so the
	// default size uses about 15 MiB when full, and never more than about
	// CacheSize × 2 × MaxCachedTokenLen. When the cache is full, storing a
	// token evicts one of a few entries sampled at random, preferring an
	// expired one, else the one expiring first.
	CacheSize int
	// Metrics, when not nil, counts this Verifier's verifications and
	// cache lookups (see NewMetrics). Without it nothing is counted.
	Metrics *Metrics
}

// Verifier checks access tokens issued by one issuer.
type Verifier struct {
	issuer   string
	cfg      Config
	provider jws.KeyProvider
	cache    *tokenCache // nil when disabled
	metrics  *Metrics    // nil when not counted
}

// NewVerifier returns a Verifier for tokens from issuerURL signed by keys.
// cfg may be nil only with Verify callers that expect ErrNoAudienceConfig.
func NewVerifier(issuerURL string, keys KeySet, cfg *Config) *Verifier {
	v := &Verifier{issuer: issuerURL}
	if cfg != nil {
		v.cfg = *cfg
	}
	if len(v.cfg.Algorithms) == 0 {
		v.cfg.Algorithms = DefaultAlgorithms
	}
	if v.cfg.Now == nil {
		v.cfg.Now = time.Now
	}
	v.provider = jwtcheck.KeyProvider(keys, v.cfg.Algorithms)
	v.metrics = v.cfg.Metrics
	switch {
	case v.cfg.CacheSize == 0:
		v.cache = newTokenCache(DefaultCacheSize)
	case v.cfg.CacheSize > 0:
		v.cache = newTokenCache(v.cfg.CacheSize)
	}
	return v
}

// Verify checks raw's signature, "typ", "iss", "aud", "exp" and "nbf", and
// that its RFC 8705 "cnf" thumbprint equals that of peerLeaf, the leaf
// certificate of the connection the token arrived on.
//
// Tokens that pass are cached (see Config.CacheSize); a token seen before
// is re-checked for expiry and binding only, and gets the same answer as
// it would from a full check.
//
// Each call returns its own copy of the claims: changing it affects
// neither the cache nor other callers.
func (v *Verifier) Verify(ctx context.Context, raw string, peerLeaf *x509.Certificate) (*Claims, error) {
	if peerLeaf == nil {
		if v.metrics != nil {
			v.metrics.verify(ErrNoCertificate, false)
		}
		return nil, ErrNoCertificate
	}
	if v.cache != nil {
		if claims, ok, err := v.cache.get(raw, peerLeaf, v.cfg.Now()); ok {
			if v.metrics != nil {
				v.metrics.hit(err)
			}
			return claims, err
		}
	}
	claims, err := v.verifyBound(ctx, raw, peerLeaf)
	if v.metrics != nil {
		v.metrics.verify(err, v.cache != nil)
	}
	return claims, err
}

// verifyBound is Verify without the cache lookup: the full check, and
// caching the token that passes.
func (v *Verifier) verifyBound(ctx context.Context, raw string, peerLeaf *x509.Certificate) (*Claims, error) {
	claims, err := v.verify(ctx, raw, true)
	if err != nil {
		return nil, err
	}
	if !BoundTo(claims, peerLeaf) {
		return nil, ErrNotBound
	}
	if v.cache != nil {
		v.cache.put(raw, claims, peerLeaf, v.deadline(claims), v.cfg.Now())
	}
	return claims, nil
}

// deadline is the instant from which claims are expired: "exp" plus the
// leeway (RFC 7519 §4.1.4).
func (v *Verifier) deadline(claims *Claims) time.Time {
	return jwtcheck.Deadline(claims.Expiry, v.cfg.Leeway)
}

// The server reads its own tokens, presented for exchange, without the
// certificate binding and the audience, and then applies its own binding
// rules; that path is module-internal (package internal/accesshook), never
// part of this package's API. It neither reads nor fills the cache of
// Verify.
func init() {
	accesshook.Register(func(ctx context.Context, v *Verifier, raw string) (*Claims, error) {
		return v.verify(ctx, raw, false)
	})
}

// BoundTo reports, in constant time, whether claims are bound to cert
// (RFC 8705 §3.1).
func BoundTo(claims *Claims, cert *x509.Certificate) bool {
	want := Thumbprint(cert)
	return subtle.ConstantTimeCompare([]byte(claims.Confirmation.X5TS256), []byte(want)) == 1
}

func (v *Verifier) verify(ctx context.Context, raw string, checkAudience bool) (*Claims, error) {
	if checkAudience && len(v.cfg.Audiences) == 0 && !v.cfg.InsecureSkipAudienceCheck {
		return nil, ErrNoAudienceConfig
	}
	if !jwtcheck.IsCompactJWS(raw) {
		return nil, fmt.Errorf("%w: not a JWS compact serialization", ErrMalformed)
	}
	var msg jws.Message
	payload, err := jws.Verify([]byte(raw), jws.WithKeyProvider(v.provider), jws.WithContext(ctx), jws.WithMessage(&msg))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSignature, err)
	}
	if typ, _ := msg.Signatures()[0].ProtectedHeaders().Type(); typ != Type && typ != "application/"+Type {
		return nil, fmt.Errorf("%w: got %q", ErrType, typ)
	}
	claims := new(Claims)
	if err := json.Unmarshal(payload, claims); err != nil {
		return nil, fmt.Errorf("%w: claims: %w", ErrMalformed, err)
	}
	if claims.Issuer != v.issuer {
		return nil, fmt.Errorf("%w: %q", ErrIssuer, claims.Issuer)
	}
	now := v.cfg.Now()
	if jwtcheck.Expired(now, claims.Expiry, v.cfg.Leeway) {
		return nil, &ExpiredError{Expiry: time.Unix(claims.Expiry, 0)}
	}
	if jwtcheck.NotYetValid(now, claims.NotBefore, v.cfg.Leeway) {
		return nil, ErrNotYetValid
	}
	if checkAudience && !v.cfg.InsecureSkipAudienceCheck && !slices.ContainsFunc(v.cfg.Audiences, claims.Audience.Contains) {
		return nil, fmt.Errorf("%w: token is for %q", ErrAudience, []string(claims.Audience))
	}
	if claims.Subject == "" || claims.Confirmation.X5TS256 == "" {
		return nil, fmt.Errorf("%w: missing sub or cnf", ErrMalformed)
	}
	return claims, nil
}
