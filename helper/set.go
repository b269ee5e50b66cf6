package helper

import (
	"crypto/x509"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/exchange/exchangeclient"
)

// maxSkew is the most a token's usable life is shortened, as in the client
// library: a token is not handed out in its last second.
const maxSkew = time.Second

// Set is one version of what the helper writes: an X509-SVID, the bundle
// of its trust domain, and one token per TokenSpec, all bound to the
// SVID's certificate. A Set is never modified.
type Set struct {
	// SVID is the X509-SVID; its private key is a secret.
	SVID *x509svid.SVID
	// Bundle is the X.509 bundle of the SVID's trust domain.
	Bundle *x509bundle.Bundle
	// Thumbprint is the RFC 8705 §3.1 x5t#S256 of the SVID's leaf
	// certificate: the cnf of every token of the set.
	Thumbprint string
	// Tokens holds a token per TokenSpec, in the order of Config.Tokens.
	Tokens []Token
	// Written is when the set was made current.
	Written time.Time
}

// Token is an access token of a Set.
type Token struct {
	// Name is the TokenSpec's name, the file name of the token.
	Name string
	// AccessToken is the JWT; a secret, never logged.
	AccessToken string
	// Expiry is the earlier of the response's expires_in and the token's
	// exp claim.
	Expiry time.Time
	// Scope is the granted scope.
	Scope []string

	usableUntil time.Time
	// refreshAt is when to replace the token with the original grant; zero
	// when its exp is capped at the certificate's NotAfter, since no
	// replacement could last longer (the next SVID re-binds it).
	refreshAt time.Time
}

// Leaf returns the SVID's leaf certificate.
func (s *Set) Leaf() *x509.Certificate { return s.SVID.Certificates[0] }

// Token returns the set's token named name.
func (s *Set) Token(name string) (Token, bool) {
	i := slices.IndexFunc(s.Tokens, func(t Token) bool { return t.Name == name })
	if i < 0 {
		return Token{}, false
	}
	return s.Tokens[i], true
}

// Valid reports whether every part of the set is usable at now: the
// certificate has not expired and no token has.
func (s *Set) Valid(now time.Time) error {
	if !now.Before(s.Leaf().NotAfter) {
		return fmt.Errorf("helper: the X509-SVID expired at %s", s.Leaf().NotAfter.UTC().Format(time.RFC3339))
	}
	for _, t := range s.Tokens {
		if !now.Before(t.usableUntil) {
			return fmt.Errorf("helper: token %q expired at %s", t.Name, t.Expiry.UTC().Format(time.RFC3339))
		}
	}
	return nil
}

// newToken checks tok, issued for a request sent at sent, and schedules
// its refresh with the client library's policy: at two thirds of its
// lifetime, unless its exp is capped at the certificate's NotAfter.
//
// The token's cnf (RFC 8705 §3.1) must be the thumbprint of leaf: a token
// bound to another certificate is refused rather than written next to
// this one.
func newToken(name string, tok *exchangeclient.Token, sent time.Time, leaf *x509.Certificate, thumb string) (Token, error) {
	claims, err := unverifiedClaims(tok.AccessToken)
	if err != nil {
		return Token{}, err
	}
	if !accesstoken.BoundTo(claims, leaf) {
		return Token{}, fmt.Errorf("helper: token %q is bound to x5t#S256 %q, not to the certificate %s", name, claims.Confirmation.X5TS256, thumb)
	}
	expiry := tok.Expiry
	if claims.Expiry > 0 {
		if exp := time.Unix(claims.Expiry, 0); exp.Before(expiry) {
			expiry = exp
		}
	}
	life := max(expiry.Sub(sent), 0)
	t := Token{
		Name:        name,
		AccessToken: tok.AccessToken,
		Expiry:      expiry,
		Scope:       tok.Scope,
		usableUntil: expiry.Add(-min(maxSkew, life/10)),
	}
	if expiry.Before(leaf.NotAfter.Add(-time.Second)) {
		t.refreshAt = sent.Add(life * 2 / 3)
	}
	return t, nil
}

// unverifiedClaims decodes the claims of a compact JWS without verifying
// its signature. The helper reads them only to schedule the refresh and to
// check the binding of a token the STS has just sent over mTLS.
func unverifiedClaims(raw string) (*accesstoken.Claims, error) {
	msg, err := jws.Parse([]byte(raw), jws.WithCompact())
	if err != nil {
		return nil, fmt.Errorf("helper: the STS returned a token that is not a compact JWS: %w", err)
	}
	var claims accesstoken.Claims
	if err := json.Unmarshal(msg.Payload(), &claims); err != nil {
		return nil, fmt.Errorf("helper: the STS returned a token with malformed claims: %w", err)
	}
	return &claims, nil
}
