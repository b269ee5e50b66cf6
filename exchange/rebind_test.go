package exchange_test

import (
	"context"
	"encoding/json"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/exchange"
	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
	"github.com/spiffe-sts/spiffe-sts/internal/fakeclock"
	"github.com/spiffe-sts/spiffe-sts/internal/ststest"
	"github.com/spiffe-sts/spiffe-sts/issuer"
	stsid "github.com/spiffe-sts/spiffe-sts/spiffeid"
)

// TestRebind presents, over a connection with a new certificate, a token
// issued to the same workload and bound to its previous certificate.
func TestRebind(t *testing.T) {
	ctx := context.Background()
	type expected struct {
		code  string
		scope string
	}
	tests := []struct {
		name             string
		presenter        string // SPIFFE ID of the new certificate's workload
		newSVIDTTL       time.Duration
		elapsed          time.Duration // on the server's clock, from minting the original to presenting it
		overrideOriginal func(*accesstoken.Claims, *time.Duration)
		overridePolicy   func(t *testing.T) *stsid.Policy
		overrideExpected func(*expected)
	}{
		{name: "baseline: same grant bound to the new certificate"},
		{
			name:       "expiry capped by the new SVID",
			newSVIDTTL: 20 * time.Second,
		},
		{
			name:             "another workload presenting the token",
			presenter:        ststest.OtherID,
			overrideExpected: func(e *expected) { e.code = "invalid_grant" },
		},
		{
			name: "a narrowed policy narrows the re-bound token",
			overridePolicy: func(t *testing.T) *stsid.Policy {
				p, err := stsid.NewPolicy([]stsid.Rule{{
					Pattern: stsid.RequirePattern("spiffe://example.org/ns/prod/sa/*"), Audiences: []string{ststest.APIAudience},
					Scopes: []string{"read"}, MaxTTL: time.Minute,
				}})
				if err != nil {
					t.Fatal(err)
				}
				return p
			},
			overrideExpected: func(e *expected) { e.scope = "read" },
		},
		{
			name:             "an expired original",
			elapsed:          2*time.Minute + time.Second, // past the original's exp
			overrideExpected: func(e *expected) { e.code = "invalid_grant" },
		},
		{
			name: "a delegated token keeps its subject and act chain",
			overrideOriginal: func(c *accesstoken.Claims, _ *time.Duration) {
				c.Subject = "spiffe://example.org/ns/prod/sa/user-svc"
				c.Actor = &accesstoken.Actor{Subject: ststest.WorkloadID}
			},
			overridePolicy: func(t *testing.T) *stsid.Policy {
				p, err := stsid.NewPolicy([]stsid.Rule{{
					Pattern: stsid.RequirePattern("spiffe://example.org/ns/prod/sa/web"), Audiences: []string{ststest.APIAudience},
					Scopes: []string{"read", "write"}, MaxTTL: time.Minute,
					Delegation: &stsid.Delegation{Subjects: []stsid.Pattern{stsid.RequirePattern("spiffe://example.org/ns/prod/sa/user-svc")}, MaxDepth: 1},
				}})
				if err != nil {
					t.Fatal(err)
				}
				return p
			},
		},
		{
			name: "a delegated token after its delegation was revoked",
			overrideOriginal: func(c *accesstoken.Claims, _ *time.Duration) {
				c.Subject = "spiffe://example.org/ns/prod/sa/user-svc"
				c.Actor = &accesstoken.Actor{Subject: ststest.WorkloadID}
			},
			overrideExpected: func(e *expected) { e.code = "invalid_request" },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The server reads a fake clock, so the original can expire
			// without the test waiting for it.
			clk := fakeclock.New(time.Now())
			// The issuer mints on the same clock: a token minted on the
			// wall clock just after a second boundary would have an nbf
			// ahead of the fake clock, not yet valid.
			var iss *issuer.Issuer
			s := ststest.Start(t, func(c *exchange.Config) {
				iss = ststest.NewIssuer(t, c.IssuerURL, clk.Now)
				c.Clock, c.Minter, c.Keys = clk.Now, iss, iss.KeySet()
			})
			s.Issuer = iss
			oldSVID := s.CA.SVID(t, ststest.WorkloadID, time.Hour)
			original := accesstoken.Claims{Subject: ststest.WorkloadID, ClientID: ststest.WorkloadID,
				Audience: accesstoken.Audience{ststest.APIAudience}, Scope: "read write"}
			ttl := 2 * time.Minute
			if tt.overrideOriginal != nil {
				tt.overrideOriginal(&original, &ttl)
			}
			raw, err := s.Issuer.Mint(ctx, &original, oldSVID.Certificates[0], ttl)
			if err != nil {
				t.Fatal(err)
			}
			clk.Advance(tt.elapsed)
			if tt.overridePolicy != nil {
				s.Server.SetPolicy(tt.overridePolicy(t))
			}
			presenter := ststest.WorkloadID
			if tt.presenter != "" {
				presenter = tt.presenter
			}
			newTTL := time.Hour
			if tt.newSVIDTTL != 0 {
				newTTL = tt.newSVIDTTL
			}
			newSVID := s.CA.SVID(t, presenter, newTTL)
			want := expected{scope: "read write"}
			if tt.overrideExpected != nil {
				tt.overrideExpected(&want)
			}

			resp, body := s.Post(t, s.Client(newSVID), formType, url.Values{
				"grant_type":         {string(protocol.GrantTypeTokenExchange)},
				"subject_token":      {raw},
				"subject_token_type": {string(protocol.TokenTypeAccessToken)},
			}.Encode())
			var out map[string]any
			if err := json.Unmarshal(body, &out); err != nil {
				t.Fatal(err)
			}
			if want.code != "" {
				if out["error"] != want.code {
					t.Fatalf("got %d %v, want %s", resp.StatusCode, out, want.code)
				}
				return
			}
			if resp.StatusCode != 200 {
				t.Fatalf("got %d %v", resp.StatusCode, out)
			}
			tok, _ := out["access_token"].(string)
			v := s.VerifierWith(ststest.APIAudience, func(c *accesstoken.Config) { c.Now = clk.Now })
			claims, err := v.Verify(ctx, tok, newSVID.Certificates[0])
			if err != nil {
				t.Fatalf("re-bound token does not verify with the new certificate: %v", err)
			}
			if _, err := v.Verify(ctx, tok, oldSVID.Certificates[0]); err == nil {
				t.Fatal("re-bound token still verifies with the old certificate")
			}
			if claims.Subject != original.Subject || claims.Scope != want.scope || claims.Audience[0] != ststest.APIAudience {
				t.Fatalf("grant changed: %+v", claims)
			}
			if (original.Actor == nil) != (claims.Actor == nil) || (claims.Actor != nil && claims.Actor.Subject != original.Actor.Subject) {
				t.Fatalf("act chain changed: %+v -> %+v", original.Actor, claims.Actor)
			}
			if claims.Expiry > original.Expiry {
				t.Fatalf("exp %d later than the original's %d", claims.Expiry, original.Expiry)
			}
			if claims.Expiry > newSVID.Certificates[0].NotAfter.Unix() {
				t.Fatalf("exp %d later than the new SVID's NotAfter %d", claims.Expiry, newSVID.Certificates[0].NotAfter.Unix())
			}
		})
	}
}
