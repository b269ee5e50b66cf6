package exchange

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
	stsid "github.com/spiffe-sts/spiffe-sts/spiffeid"
)

// TestTokenResponseJSON checks that the HTTP token endpoint's twin of
// protocol.Response has the same members and encodes as it does.
func TestTokenResponseJSON(t *testing.T) {
	pr, tr := reflect.TypeFor[protocol.Response](), reflect.TypeFor[tokenResponseJSON]()
	if pr.NumField() != tr.NumField() {
		t.Fatalf("protocol.Response has %d fields, tokenResponseJSON %d", pr.NumField(), tr.NumField())
	}
	for i := range pr.NumField() {
		if p, w := pr.Field(i), tr.Field(i); p.Name != w.Name || p.Tag != w.Tag {
			t.Errorf("field %d: protocol.Response has %s %q, tokenResponseJSON %s %q", i, p.Name, p.Tag, w.Name, w.Tag)
		}
	}
	for _, resp := range []protocol.Response{
		{AccessToken: "a.b.c", IssuedTokenType: protocol.TokenTypeAccessToken, TokenType: "Bearer", ExpiresIn: 300, Scope: "read <write>"},
		{AccessToken: "a.b.c", TokenType: "Bearer", ExpiresIn: 1},
	} {
		want, err := json.Marshal(resp)
		if err != nil {
			t.Fatal(err)
		}
		got, err := json.Marshal(tokenResponseJSON{AccessToken: resp.AccessToken, IssuedTokenType: string(resp.IssuedTokenType),
			TokenType: resp.TokenType, ExpiresIn: resp.ExpiresIn, Scope: resp.Scope})
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Errorf("tokenResponseJSON encodes as %s, protocol.Response as %s", got, want)
		}
	}
}

// TestRuleForAfterReload checks that the exchange reuses the rule found
// when the rate limit was charged only while the policy is the one it was
// charged under and the caller the one charged.
func TestRuleForAfterReload(t *testing.T) {
	policy := func(audience string) *stsid.Policy {
		p, err := stsid.NewPolicy([]stsid.Rule{{Pattern: stsid.RequirePattern("spiffe://example.org/*"),
			Audiences: []string{audience}, MaxTTL: time.Minute}})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	old, reloaded := policy("old"), policy("new")
	caller := stsid.Peer{ID: spiffeid.RequireFromString("spiffe://example.org/a")}
	other := stsid.Peer{ID: spiffeid.RequireFromString("spiffe://other.example/b")}

	var s Server
	s.policy.Store(old)
	var d decision
	d.caller = caller
	if err := s.chargeDecision(&d); err != nil {
		t.Fatal(err)
	}
	if rule, ok := s.ruleFor(&d, caller); !ok || rule != d.chargedRule || !rule.AllowsAudience("old") {
		t.Errorf("unchanged policy: rule %+v, %t; want the charged one", rule, ok)
	}
	if rule, ok := s.ruleFor(&d, other); ok {
		t.Errorf("another caller: rule %+v; want none (no rule matches it)", rule)
	}
	s.policy.Store(reloaded)
	if rule, ok := s.ruleFor(&d, caller); !ok || !rule.AllowsAudience("new") {
		t.Errorf("after a reload: rule %+v, %t; want the new policy's", rule, ok)
	}
	s.policy.Store(old)
	d = decision{caller: other}
	if err := s.chargeDecision(&d); err != nil {
		t.Fatal(err)
	}
	if rule, ok := s.ruleFor(&d, other); ok {
		t.Errorf("no rule when charged: rule %+v; want none", rule)
	}
}
