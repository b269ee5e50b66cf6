package exchange_test

import (
	"encoding/json"
	"net/url"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/spiffe-sts/spiffe-sts/exchange"
	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
	"github.com/spiffe-sts/spiffe-sts/internal/ststest"
	"github.com/spiffe-sts/spiffe-sts/internal/testca"
	stsid "github.com/spiffe-sts/spiffe-sts/spiffeid"
)

// TestFederatedTrustDomain accepts callers of another trust domain only when
// the configuration federates with it, even when its bundle is at hand.
func TestFederatedTrustDomain(t *testing.T) {
	partner := testca.New(t, "partner.example")
	const partnerWorkload = "spiffe://partner.example/ns/prod/sa/web"
	tests := []struct {
		name      string
		federate  bool
		expectErr string
	}{
		{name: "federated", federate: true},
		{name: "bundle present but not federated", expectErr: "invalid_client"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var bundles *spiffebundle.Set
			s := ststest.Start(t, func(c *exchange.Config) {
				bundles = spiffebundle.NewSet(c.X509Bundles.(*spiffebundle.Bundle), partner.Bundle())
				c.X509Bundles, c.JWTBundles = bundles, bundles
				if tt.federate {
					c.FederatedTrustDomains = []spiffeid.TrustDomain{partner.TrustDomain}
				}
				policy, err := stsid.NewPolicy([]stsid.Rule{{
					Pattern: stsid.RequirePattern("spiffe://partner.example"), Audiences: []string{ststest.APIAudience}, MaxTTL: time.Minute,
				}})
				if err != nil {
					t.Fatal(err)
				}
				c.Policy = policy
			})
			svid := partner.SVID(t, partnerWorkload, time.Hour)
			resp, raw := s.Post(t, s.Client(svid), formType, url.Values{
				"grant_type": {string(protocol.GrantTypeTokenExchange)}, "audience": {ststest.APIAudience},
				"subject_token":      {partner.JWTSVID(t, partnerWorkload, []string{s.URL}, time.Now().Add(time.Minute))},
				"subject_token_type": {string(protocol.TokenTypeJWT)},
			}.Encode())
			var body map[string]any
			if err := json.Unmarshal(raw, &body); err != nil {
				t.Fatal(err)
			}
			if tt.expectErr != "" {
				if body["error"] != tt.expectErr {
					t.Fatalf("got %d %v, want %s", resp.StatusCode, body, tt.expectErr)
				}
				return
			}
			tok, _ := body["access_token"].(string)
			claims, err := s.Verifier(ststest.APIAudience).Verify(t.Context(), tok, svid.Certificates[0])
			if err != nil || claims.Subject != partnerWorkload {
				t.Fatalf("got %d %v; verify: %v", resp.StatusCode, body, err)
			}
		})
	}
}
