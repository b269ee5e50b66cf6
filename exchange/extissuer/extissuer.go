package extissuer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/internal/jwtcheck"
)

// Errors returned by Verify, wrapped with detail; match them with
// errors.Is.
var (
	ErrMalformed   = errors.New("extissuer: malformed token")
	ErrSignature   = errors.New("extissuer: signature does not verify")
	ErrIssuer      = errors.New("extissuer: wrong issuer")
	ErrAudience    = errors.New("extissuer: audience not accepted")
	ErrExpired     = errors.New("extissuer: token expired")
	ErrNotYetValid = errors.New("extissuer: token not yet valid")
)

// DefaultAlgorithms are the signature algorithms accepted when
// Config.Algorithms is empty.
var DefaultAlgorithms = []jwa.SignatureAlgorithm{jwa.RS256(), jwa.ES256()}

// supportedAlgorithms are the asymmetric algorithms Config.Algorithms may
// name (RFC 7518 §3.1, RFC 8037 §3.1).
var supportedAlgorithms = []jwa.SignatureAlgorithm{
	jwa.RS256(), jwa.RS384(), jwa.RS512(),
	jwa.PS256(), jwa.PS384(), jwa.PS512(),
	jwa.ES256(), jwa.ES384(), jwa.ES512(),
	jwa.EdDSA(),
}

// ParseAlgorithm maps an RFC 7518 §3.1 (or RFC 8037 §3.1) asymmetric
// signature algorithm name, case-sensitive, to its jwa value: RS256, RS384,
// RS512, PS256, PS384, PS512, ES256, ES384, ES512 or EdDSA. "none" and the
// HMAC algorithms are errors.
func ParseAlgorithm(s string) (jwa.SignatureAlgorithm, error) {
	for _, alg := range supportedAlgorithms {
		if alg.String() == s {
			return alg, nil
		}
	}
	return jwa.EmptySignatureAlgorithm(), fmt.Errorf("extissuer: unsupported signature algorithm %q (want one of %s)", s, algorithmList())
}

// SupportedAlgorithms returns the algorithms ParseAlgorithm accepts.
func SupportedAlgorithms() []jwa.SignatureAlgorithm { return slices.Clone(supportedAlgorithms) }

func algorithmList() string { return algorithmNames(supportedAlgorithms) }

func algorithmNames(algs []jwa.SignatureAlgorithm) string {
	names := make([]string, len(algs))
	for i, alg := range algs {
		names[i] = alg.String()
	}
	return strings.Join(names, ", ")
}

// Config configures an Issuer.
type Config struct {
	// Name is the issuer's name in policy (spiffeid.Delegation.Issuers).
	// Required.
	Name string
	// Issuer is the "iss" of its tokens, compared exactly: an https URL.
	// Required.
	Issuer string
	// JWKSURL is the https URL of the issuer's JWKS (RFC 7517 §5), the
	// "jwks_uri" of its OpenID or RFC 8414 metadata. Exactly one of
	// JWKSURL and JWKS is required.
	JWKSURL string
	// JWKS are fixed keys of the issuer, such as a parsed JWKS document
	// (jwk.Parse) that the caller read from a file. Every key in it must
	// be usable (see the package documentation), and one at least must
	// have an accepted algorithm. New does not modify it.
	JWKS jwk.Set
	// Audience is this server's identifier at the issuer: a token's "aud"
	// must contain it. Required.
	Audience string
	// Algorithms are the accepted signature algorithms (see
	// ParseAlgorithm); DefaultAlgorithms when empty.
	Algorithms []jwa.SignatureAlgorithm
	// HTTPClient fetches JWKSURL; required with it. It is not modified.
	// Set its Transport's TLSClientConfig.RootCAs to trust a private CA;
	// with none, the system roots apply.
	HTTPClient *http.Client
	// Leeway tolerates this much clock skew on "exp", "nbf" and "iat";
	// zero by default. Must not be negative.
	Leeway time.Duration
	// Now returns the current time; time.Now when nil.
	Now func() time.Time
}

// Issuer verifies the tokens of one external issuer. It implements
// exchange.ExternalIssuer and is safe for concurrent use.
type Issuer struct {
	name     string
	issuer   string
	audience string
	algs     []jwa.SignatureAlgorithm
	leeway   time.Duration
	now      func() time.Time
	provider jws.KeyProvider
}

// New validates cfg, loads the issuer's keys and returns the Issuer. With
// JWKSURL it fetches the JWKS before returning and blocks until the fetch
// completes or ctx ends; an unreachable or unusable JWKS is an error.
func New(ctx context.Context, cfg Config) (*Issuer, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	i := &Issuer{
		name:     cfg.Name,
		issuer:   cfg.Issuer,
		audience: cfg.Audience,
		algs:     slices.Clone(cfg.Algorithms),
		leeway:   cfg.Leeway,
		now:      cfg.Now,
	}
	if len(i.algs) == 0 {
		i.algs = slices.Clone(DefaultAlgorithms)
	}
	if i.now == nil {
		i.now = time.Now
	}

	var keys accesstoken.KeySet
	var err error
	if cfg.JWKS != nil {
		keys, err = staticKeys(cfg.JWKS, i.algs)
	} else {
		client := *cfg.HTTPClient
		client.Transport = &jwksTransport{base: cfg.HTTPClient.Transport, algs: i.algs}
		keys, err = accesstoken.NewRemoteKeySet(ctx, cfg.JWKSURL, accesstoken.RemoteKeySetConfig{
			HTTPClient: &client,
			Now:        cfg.Now,
		})
	}
	if err != nil {
		return nil, fmt.Errorf("extissuer: %s: %w", cfg.Name, err)
	}
	i.provider = jwtcheck.KeyProvider(keys, i.algs)
	return i, nil
}

func (c *Config) validate() error {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("extissuer: %s: "+format, append([]any{c.Name}, args...)...)
	}
	switch {
	case c.Name == "":
		return errors.New("extissuer: Name is required")
	case c.Audience == "":
		return fail("Audience is required")
	case (c.JWKSURL == "") == (c.JWKS == nil):
		return fail("exactly one of JWKSURL and JWKS is required")
	case c.JWKSURL != "" && c.HTTPClient == nil:
		return fail("HTTPClient is required with JWKSURL")
	case c.Leeway < 0:
		return fail("Leeway must not be negative")
	}
	if err := CheckIssuerURL(c.Issuer); err != nil {
		return fail("Issuer: %w", err)
	}
	if c.JWKSURL != "" {
		if err := CheckJWKSURL(c.JWKSURL); err != nil {
			return fail("JWKSURL: %w", err)
		}
	}
	for _, alg := range c.Algorithms {
		if _, err := ParseAlgorithm(alg.String()); err != nil {
			return fail("Algorithms: %w", err)
		}
	}
	return nil
}

// CheckIssuerURL reports whether raw can be an issuer identifier
// (OpenID Connect Discovery 1.0 §3, RFC 8414 §2): an https URL with a host
// and without user info, query or fragment. A path, and a trailing slash,
// are allowed: issuers such as Entra ID and Auth0 have them.
func CheckIssuerURL(raw string) error { return checkHTTPSURL(raw, false) }

// CheckJWKSURL reports whether raw can be a JWKS URL: an https URL with a
// host and without user info or fragment; a query is allowed.
func CheckJWKSURL(raw string) error { return checkHTTPSURL(raw, true) }

func checkHTTPSURL(raw string, queryAllowed bool) error {
	u, err := url.Parse(raw)
	hasQuery := err == nil && (u.RawQuery != "" || u.ForceQuery)
	switch {
	case raw == "":
		return errors.New("is required")
	case err != nil:
		return fmt.Errorf("invalid URL %q", raw)
	case u.Scheme != "https" || u.Host == "" || u.Opaque != "":
		return fmt.Errorf("%q is not an https URL", raw)
	case !queryAllowed && (u.User != nil || hasQuery || u.Fragment != ""):
		return fmt.Errorf("%q must not have user info, a query or a fragment", raw)
	case u.User != nil || u.Fragment != "":
		return fmt.Errorf("%q must not have user info or a fragment", raw)
	}
	return nil
}

// Name returns the issuer's name in policy.
func (i *Issuer) Name() string { return i.name }

// Issuer returns the "iss" of its tokens.
func (i *Issuer) Issuer() string { return i.issuer }

// Verify checks raw (see the package documentation) and returns its
// claims. Each call returns new claims.
func (i *Issuer) Verify(ctx context.Context, raw string) (*accesstoken.Claims, error) {
	if !jwtcheck.IsCompactJWS(raw) {
		return nil, fmt.Errorf("%w: not a JWS compact serialization", ErrMalformed)
	}
	payload, err := jws.Verify([]byte(raw), jws.WithKeyProvider(i.provider), jws.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSignature, err)
	}
	var tc tokenClaims
	if err := json.Unmarshal(payload, &tc); err != nil {
		return nil, fmt.Errorf("%w: claims: %w", ErrMalformed, err)
	}
	if tc.Issuer != i.issuer {
		return nil, fmt.Errorf("%w: %q", ErrIssuer, tc.Issuer)
	}
	if !tc.Audience.Contains(i.audience) {
		return nil, fmt.Errorf("%w: token is for %q", ErrAudience, []string(tc.Audience))
	}
	now := i.now()
	switch {
	case tc.Expiry == nil:
		return nil, fmt.Errorf("%w: no exp", ErrMalformed)
	case jwtcheck.Expired(now, int64(*tc.Expiry), i.leeway):
		return nil, fmt.Errorf("%w at %s", ErrExpired, tc.Expiry)
	case tc.NotBefore != nil && jwtcheck.NotYetValid(now, int64(*tc.NotBefore), i.leeway):
		return nil, fmt.Errorf("%w: nbf is %s", ErrNotYetValid, tc.NotBefore)
	case tc.IssuedAt != nil && jwtcheck.NotYetValid(now, int64(*tc.IssuedAt), i.leeway):
		return nil, fmt.Errorf("%w: iat is %s", ErrNotYetValid, tc.IssuedAt)
	case tc.Subject == "":
		return nil, fmt.Errorf("%w: no sub", ErrMalformed)
	}
	return tc.claims()
}

// tokenClaims is the payload as the issuer sends it.
type tokenClaims struct {
	Issuer    string               `json:"iss"`
	Subject   string               `json:"sub"`
	Audience  accesstoken.Audience `json:"aud"`
	Expiry    *numericDate         `json:"exp"`
	IssuedAt  *numericDate         `json:"iat"`
	NotBefore *numericDate         `json:"nbf"`
	JWTID     string               `json:"jti"`
	Scope     *scopeClaim          `json:"scope"`
	Scp       *scopeClaim          `json:"scp"`
	Act       *actorClaim          `json:"act"`
	MayAct    *actorClaim          `json:"may_act"`
}

// maxActorDepth bounds the nesting of "act" claims.
const maxActorDepth = 32

func (tc *tokenClaims) claims() (*accesstoken.Claims, error) {
	c := &accesstoken.Claims{
		Issuer:   tc.Issuer,
		Subject:  tc.Subject,
		Audience: slices.Clone(tc.Audience),
		Expiry:   int64(*tc.Expiry),
		JWTID:    tc.JWTID,
	}
	if tc.IssuedAt != nil {
		c.IssuedAt = int64(*tc.IssuedAt)
	}
	if tc.NotBefore != nil {
		c.NotBefore = int64(*tc.NotBefore)
	}
	switch {
	case tc.Scope != nil:
		c.Scope = tc.Scope.value
	case tc.Scp != nil:
		c.Scope = tc.Scp.value
	}
	// RFC 8693 §4.1: the current actor, and nested in it whom it acted for.
	var err error
	if c.Actor, err = tc.Act.actor("act", maxActorDepth); err != nil {
		return nil, err
	}
	// RFC 8693 §4.4: who may act for the subject; a nested "act" has no
	// meaning there and is dropped.
	if tc.MayAct != nil {
		if tc.MayAct.Subject == "" {
			return nil, fmt.Errorf("%w: may_act has no sub", ErrMalformed)
		}
		c.MayAct = &accesstoken.Actor{Subject: tc.MayAct.Subject}
	}
	return c, nil
}

// actorClaim is an RFC 8693 §4.1 "act" or §4.4 "may_act" claim. Claims
// other than "sub" and "act" identify the actor further but have no place
// in accesstoken.Actor and are ignored.
type actorClaim struct {
	Subject string      `json:"sub"`
	Act     *actorClaim `json:"act"`
}

func (a *actorClaim) actor(claim string, depth int) (*accesstoken.Actor, error) {
	switch {
	case a == nil:
		return nil, nil
	case depth == 0:
		return nil, fmt.Errorf("%w: act nested more than %d deep", ErrMalformed, maxActorDepth)
	case a.Subject == "":
		return nil, fmt.Errorf("%w: %s has no sub", ErrMalformed, claim)
	}
	inner, err := a.Act.actor(claim+".act", depth-1)
	if err != nil {
		return nil, err
	}
	return &accesstoken.Actor{Subject: a.Subject, Actor: inner}, nil
}

// scopeClaim is a "scope" or "scp" claim: a space-separated string
// (RFC 8693 §4.2) or an array of scope-tokens, normalized to the string.
type scopeClaim struct{ value string }

// UnmarshalJSON implements json.Unmarshaler.
func (s *scopeClaim) UnmarshalJSON(b []byte) error {
	var scopes []string
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		scopes = strings.Fields(one)
	} else if err := json.Unmarshal(b, &scopes); err != nil {
		return errors.New("scope is neither a string nor an array of strings")
	}
	for _, scope := range scopes {
		if err := jwtcheck.CheckScopeToken(scope); err != nil {
			return err
		}
	}
	s.value = strings.Join(scopes, " ")
	return nil
}

// numericDate is an RFC 7519 §2 NumericDate: seconds since the epoch, an
// integer or not; fractions are dropped.
type numericDate int64

// maxNumericDate is the end of year 9999.
const maxNumericDate = 253402300799

// UnmarshalJSON implements json.Unmarshaler.
func (d *numericDate) UnmarshalJSON(b []byte) error {
	var f float64
	if err := json.Unmarshal(b, &f); err != nil || math.IsNaN(f) || f < 0 || f > maxNumericDate {
		return errors.New("invalid NumericDate")
	}
	*d = numericDate(f)
	return nil
}

func (d numericDate) time() time.Time { return time.Unix(int64(d), 0) }

func (d numericDate) String() string { return d.time().UTC().Format(time.RFC3339) }

// staticKeys returns the keys of set; every key in it must be usable, and
// one at least must have an accepted algorithm.
func staticKeys(set jwk.Set, algs []jwa.SignatureAlgorithm) (*accesstoken.StaticKeySet, error) {
	usable, err := signatureKeys(set, algs, true)
	if err != nil {
		return nil, fmt.Errorf("JWKS: %w", err)
	}
	accepted := 0
	for k := 0; k < usable.Len(); k++ {
		key, _ := usable.Key(k)
		if slices.ContainsFunc(algs, func(alg jwa.SignatureAlgorithm) bool { return alg.String() == jwtcheck.KeyAlgorithm(key) }) {
			accepted++
		}
	}
	if accepted == 0 {
		return nil, fmt.Errorf("JWKS: no key for the accepted algorithms (%s)", algorithmNames(algs))
	}
	return accesstoken.NewStaticKeySet(usable)
}
