package ststest

import (
	"context"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
)

// BearerCall is a call to a resource server with an access token, for the
// tests of its middleware.
type BearerCall struct {
	Claims accesstoken.Claims
	// BoundTo is the SVID the token is bound to, Client the one the
	// caller's connection presents.
	BoundTo, Client *x509svid.SVID
	// Header is the authorization header or metadata; "" sends none.
	Header func(token string) string
}

// NewBearerCall returns a call by svid, as WorkloadID, with a token for
// APIAudience and scope bound to svid and sent as "Bearer <token>".
func NewBearerCall(svid *x509svid.SVID, scope string) BearerCall {
	return BearerCall{
		Claims: accesstoken.Claims{
			Subject: WorkloadID, ClientID: WorkloadID,
			Audience: accesstoken.Audience{APIAudience}, Scope: scope,
		},
		BoundTo: svid, Client: svid,
		Header: func(token string) string { return "Bearer " + token },
	}
}

// Mint returns a token with claims, bound to boundTo, valid for a minute.
func (s *STS) Mint(t testing.TB, claims accesstoken.Claims, boundTo *x509svid.SVID) string {
	t.Helper()
	raw, err := s.Issuer.Mint(context.Background(), &claims, boundTo.Certificates[0], time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// VerifierWith returns a resource-server verifier for aud, with
// overrideConfig (when not nil) applied to its configuration.
func (s *STS) VerifierWith(aud string, overrideConfig func(*accesstoken.Config)) *accesstoken.Verifier {
	cfg := accesstoken.Config{Audiences: []string{aud}}
	if overrideConfig != nil {
		overrideConfig(&cfg)
	}
	return accesstoken.NewVerifier(s.URL, s.Issuer.KeySet(), &cfg)
}
