package exchange_test

import (
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/exchange"
	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
	"github.com/spiffe-sts/spiffe-sts/internal/ststest"
	"github.com/spiffe-sts/spiffe-sts/internal/testca"
)

// TestSubjectTokenRefusals pins the error_description of every refusal of
// a subject token (subject.go): each is a fixed text of ours, never a
// dependency's.
func TestSubjectTokenRefusals(t *testing.T) {
	// The server's clock is fixed; tokens are made relative to it. The
	// JWT-SVID parser of go-spiffe reads the wall clock but allows a minute
	// of skew, so the offsets below stay within it. Each case sets now a
	// little ahead of the wall clock, so that tokens minted on the wall
	// clock during the case (whole seconds) are never in its future.
	var now time.Time
	partner := testca.New(t, "partner.example")
	const partnerWorkload = "spiffe://partner.example/ns/prod/sa/web"

	type env struct {
		s   *ststest.STS
		ext *fakeIssuer
	}
	accessToken := func(e env, claims accesstoken.Claims) string {
		if claims.Subject == "" {
			claims.Subject = workloadID
		}
		claims.ClientID, claims.Audience = workloadID, accesstoken.Audience{apiAud}
		return e.s.Mint(t, claims, e.s.WorkloadSVID(t, workloadID))
	}
	for _, tc := range []struct {
		name string
		// clock is the server's clock, now when nil.
		clock func() time.Time
		// subject returns the subject token and its type; the workload's
		// JWT-SVID when nil.
		subject    func(t *testing.T, e env) (string, protocol.TokenType)
		expectDesc string // "" for success
	}{
		{name: "baseline"},
		{
			name: "JWT-SVID signed by an unknown key",
			subject: func(t *testing.T, e env) (string, protocol.TokenType) {
				return testca.SignJWT(t, testca.NewKey(t), "unknown", map[string]any{
					"sub": workloadID, "aud": []string{e.s.URL}, "exp": now.Add(time.Minute).Unix(),
				}), protocol.TokenTypeJWT
			},
			expectDesc: "the subject token is not a valid JWT-SVID for this server",
		},
		{
			name: "JWT-SVID for another audience",
			subject: func(t *testing.T, e env) (string, protocol.TokenType) {
				return e.s.CA.JWTSVID(t, workloadID, []string{"https://elsewhere.example"}, now.Add(time.Minute)), protocol.TokenTypeJWT
			},
			expectDesc: "the subject token is not a valid JWT-SVID for this server",
		},
		{
			name: "JWT-SVID expired within go-spiffe's skew",
			subject: func(t *testing.T, e env) (string, protocol.TokenType) {
				return e.s.CA.JWTSVID(t, workloadID, []string{e.s.URL}, now.Add(-20*time.Second)), protocol.TokenTypeJWT
			},
			expectDesc: "the subject token has expired",
		},
		{
			name: "JWT-SVID not yet valid within go-spiffe's skew",
			subject: func(t *testing.T, e env) (string, protocol.TokenType) {
				return testca.SignJWT(t, e.s.CA.JWTKey(), e.s.CA.JWTKeyID(), map[string]any{
					"sub": workloadID, "aud": []string{e.s.URL}, "exp": now.Add(time.Minute).Unix(), "nbf": now.Add(20 * time.Second).Unix(),
				}), protocol.TokenTypeJWT
			},
			expectDesc: "the subject token is not yet valid",
		},
		{
			name: "JWT-SVID of a trust domain with a bundle but not federated",
			subject: func(t *testing.T, e env) (string, protocol.TokenType) {
				return partner.JWTSVID(t, partnerWorkload, []string{e.s.URL}, now.Add(time.Minute)), protocol.TokenTypeJWT
			},
			expectDesc: `the subject token's trust domain "partner.example" is not trusted`,
		},
		{
			name: "external token refused by its issuer",
			subject: func(t *testing.T, _ env) (string, protocol.TokenType) {
				return testca.SignJWT(t, testca.NewKey(t), "corp-key", map[string]any{"iss": corpIssuer, "sub": "alice", "exp": now.Add(time.Minute).Unix()}), protocol.TokenTypeJWT
			},
			expectDesc: `the subject token was refused by issuer "corp"`,
		},
		{
			name: "external token without sub",
			subject: func(t *testing.T, e env) (string, protocol.TokenType) {
				return e.ext.userToken(t, accesstoken.Claims{Issuer: corpIssuer, Expiry: now.Add(time.Minute).Unix()}), protocol.TokenTypeJWT
			},
			expectDesc: `the subject token of issuer "corp" has no sub or exp`,
		},
		{
			name: "access token",
			subject: func(_ *testing.T, e env) (string, protocol.TokenType) {
				return accessToken(e, accesstoken.Claims{}), protocol.TokenTypeAccessToken
			},
		},
		{
			name:  "access token expired",
			clock: func() time.Time { return now.Add(2 * time.Minute) },
			subject: func(_ *testing.T, e env) (string, protocol.TokenType) {
				return accessToken(e, accesstoken.Claims{}), protocol.TokenTypeAccessToken
			},
			expectDesc: "the subject token has expired",
		},
		{
			name:  "access token not yet valid",
			clock: func() time.Time { return now.Add(-30 * time.Second) },
			subject: func(_ *testing.T, e env) (string, protocol.TokenType) {
				return accessToken(e, accesstoken.Claims{}), protocol.TokenTypeAccessToken
			},
			expectDesc: "the subject token is not yet valid",
		},
		{
			name: "access token of another issuer",
			subject: func(t *testing.T, e env) (string, protocol.TokenType) {
				return e.s.CA.JWTSVID(t, workloadID, []string{e.s.URL}, now.Add(time.Minute)), protocol.TokenTypeAccessToken
			},
			expectDesc: "the subject token is not an access token issued by this server",
		},
		{
			name: "access token for the subject of an issuer no longer trusted",
			subject: func(_ *testing.T, e env) (string, protocol.TokenType) {
				return accessToken(e, accesstoken.Claims{SubjectID: &accesstoken.SubjectID{
					Format: accesstoken.SubjectIDFormatIssSub, Issuer: "https://gone.example", Subject: "alice",
				}}), protocol.TokenTypeAccessToken
			},
			expectDesc: "the subject token's subject comes from an issuer this server no longer trusts",
		},
		{
			name: "access token whose subject is not a SPIFFE ID",
			subject: func(_ *testing.T, e env) (string, protocol.TokenType) {
				return accessToken(e, accesstoken.Claims{Subject: "alice"}), protocol.TokenTypeAccessToken
			},
			expectDesc: "the subject token's subject is not a SPIFFE ID",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now = time.Now().Truncate(time.Second).Add(2 * time.Second)
			e := env{ext: &fakeIssuer{tokens: map[string]*accesstoken.Claims{}}}
			clock := tc.clock
			if clock == nil {
				clock = func() time.Time { return now }
			}
			e.s = ststest.Start(t, func(c *exchange.Config) {
				bundles := spiffebundle.NewSet(c.JWTBundles.(*spiffebundle.Bundle), partner.Bundle())
				c.JWTBundles = bundles
				c.ExternalIssuers = []exchange.ExternalIssuer{e.ext}
				c.Clock = clock
			})
			token, typ := e.s.JWTSVID(t, workloadID), protocol.TokenTypeJWT
			if tc.subject != nil {
				token, typ = tc.subject(t, e)
			}
			f := &fixture{STS: e.s}
			resp := f.post(t, f.client(e.s.WorkloadSVID(t, workloadID)), formType, url.Values{
				"grant_type":         {string(protocol.GrantTypeTokenExchange)},
				"subject_token":      {token},
				"subject_token_type": {string(typ)},
				"audience":           {apiAud},
			}.Encode())
			if tc.expectDesc == "" {
				if resp.status != http.StatusOK {
					t.Fatalf("status %d, body %v", resp.status, resp.body)
				}
				return
			}
			if resp.status != http.StatusBadRequest || resp.body["error"] != "invalid_grant" || resp.body["error_description"] != tc.expectDesc {
				t.Fatalf("got %d %v, want 400 invalid_grant %q", resp.status, resp.body, tc.expectDesc)
			}
		})
	}
}
