package exchange_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/exchange"
	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
	"github.com/spiffe-sts/spiffe-sts/internal/ststest"
	"github.com/spiffe-sts/spiffe-sts/internal/testca"
	stsid "github.com/spiffe-sts/spiffe-sts/spiffeid"
)

const (
	frontendID = "spiffe://example.org/ns/shop/sa/frontend"
	ordersID   = "spiffe://example.org/ns/shop/sa/orders"
	paymentsID = "spiffe://example.org/ns/shop/sa/payments"
	thiefID    = "spiffe://example.org/ns/shop/sa/thief"
	batchID    = "spiffe://example.org/ns/shop/sa/batch"
	adminID    = "spiffe://example.org/ns/ops/sa/admin"
	corpIssuer = "https://idp.corp.example"
)

// fakeIssuer is an external issuer that accepts the tokens it was given.
type fakeIssuer struct {
	mu     sync.Mutex
	tokens map[string]*accesstoken.Claims
}

func (f *fakeIssuer) Name() string   { return "corp" }
func (f *fakeIssuer) Issuer() string { return corpIssuer }
func (f *fakeIssuer) Verify(_ context.Context, raw string) (*accesstoken.Claims, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.tokens[raw]; ok {
		return c, nil
	}
	return nil, errors.New("signature does not verify")
}

// userToken returns an end user's token from the corp issuer.
func (f *fakeIssuer) userToken(t *testing.T, claims accesstoken.Claims) string {
	raw := testca.SignJWT(t, testca.NewKey(t), "corp-key", map[string]any{"iss": corpIssuer, "sub": claims.Subject, "exp": claims.Expiry})
	f.mu.Lock()
	f.tokens[raw] = &claims
	f.mu.Unlock()
	return raw
}

func delegationPolicyTB(tb testing.TB) *stsid.Policy { return delegationPolicy(tb, nil) }

func delegationPolicy(t testing.TB, overrideRules func([]stsid.Rule)) *stsid.Policy {
	t.Helper()
	p := stsid.RequirePattern
	rules := []stsid.Rule{
		{Pattern: p(frontendID), Audiences: []string{ordersID}, Scopes: []string{"read", "write"}, MaxTTL: 5 * time.Minute,
			Delegation: &stsid.Delegation{Issuers: []string{"corp"}, Subjects: []stsid.Pattern{p(batchID)}, MaxDepth: 1}},
		{Pattern: p(ordersID), Audiences: []string{paymentsID}, Scopes: []string{"read", "write"}, MaxTTL: 5 * time.Minute,
			Delegation: &stsid.Delegation{Issuers: []string{"corp"}, Subjects: []stsid.Pattern{p(frontendID)}, MaxDepth: 2}},
		{Pattern: p(thiefID), Audiences: []string{ordersID, paymentsID}, Scopes: []string{"read", "write"}, MaxTTL: 5 * time.Minute,
			Delegation: &stsid.Delegation{Issuers: []string{"corp"}, Subjects: []stsid.Pattern{p("spiffe://example.org")}, MaxDepth: 5, Impersonation: true}},
		{Pattern: p(adminID), Audiences: []string{paymentsID}, Scopes: []string{"read"}, MaxTTL: 5 * time.Minute,
			Delegation: &stsid.Delegation{Subjects: []stsid.Pattern{p(batchID)}, MaxDepth: 1, Impersonation: true}},
	}
	if overrideRules != nil {
		overrideRules(rules)
	}
	policy, err := stsid.NewPolicy(rules)
	if err != nil {
		t.Fatal(err)
	}
	return policy
}

// TestDelegation exchanges tokens along frontend → orders → payments and
// checks each rule of delegation, each allowed and refused.
func TestDelegation(t *testing.T) {
	ctx := context.Background()
	type expected struct {
		code, desc string
		sub        string
		actors     []string
		scope      string
		maxExpires float64
	}
	type step struct {
		caller string
		// params builds the request from the previous step's token.
		params func(t *testing.T, prev string) url.Values
	}
	exchangeOf := func(tokenType protocol.TokenType, aud, scope string) func(*testing.T, string) url.Values {
		return func(_ *testing.T, prev string) url.Values {
			v := url.Values{"grant_type": {string(protocol.GrantTypeTokenExchange)}, "subject_token": {prev},
				"subject_token_type": {string(tokenType)}, "audience": {aud}}
			if scope != "" {
				v.Set("scope", scope)
			}
			return v
		}
	}
	userExchange := exchangeOf(protocol.TokenTypeJWT, ordersID, "")
	ordersExchange := exchangeOf(protocol.TokenTypeAccessToken, paymentsID, "")

	tests := []struct {
		name             string
		user             func(*accesstoken.Claims)
		overrideRules    func([]stsid.Rule)
		steps            []step
		overrideExpected func(*expected)
		securityEvent    bool
	}{
		{
			name:  "baseline: user -> frontend -> orders",
			steps: []step{{frontendID, userExchange}, {ordersID, ordersExchange}},
		},
		{
			name:             "first hop: the frontend acts for the user",
			steps:            []step{{frontendID, userExchange}},
			overrideExpected: func(e *expected) { e.actors = []string{frontendID}; e.scope = "read write" },
		},
		{
			name:             "scopes narrow along the chain",
			steps:            []step{{frontendID, exchangeOf(protocol.TokenTypeJWT, ordersID, "read")}, {ordersID, exchangeOf(protocol.TokenTypeAccessToken, paymentsID, "read write")}},
			overrideExpected: func(e *expected) { e.scope = "read" },
		},
		{
			name:             "lifetime never exceeds the subject token's",
			user:             func(c *accesstoken.Claims) { c.Expiry = time.Now().Add(30 * time.Second).Unix() },
			steps:            []step{{frontendID, userExchange}, {ordersID, ordersExchange}},
			overrideExpected: func(e *expected) { e.maxExpires = 30 },
		},
		{
			name:          "a stolen token exchanged by a client it was not sent to",
			steps:         []step{{frontendID, userExchange}, {thiefID, ordersExchange}},
			securityEvent: true,
			overrideExpected: func(e *expected) {
				e.code, e.desc = "invalid_grant", "the subject token was neither issued nor sent to this client"
			},
		},
		{
			name: "chain deeper than policy allows",
			overrideRules: func(r []stsid.Rule) {
				r[1].Delegation.MaxDepth = 1
			},
			steps: []step{{frontendID, userExchange}, {ordersID, ordersExchange}},
			overrideExpected: func(e *expected) {
				e.code, e.desc = "invalid_request", "the act chain would have 2 actors; policy allows 1"
			},
		},
		{
			name:             "may_act naming the caller",
			user:             func(c *accesstoken.Claims) { c.MayAct = &accesstoken.Actor{Subject: frontendID} },
			steps:            []step{{frontendID, userExchange}},
			overrideExpected: func(e *expected) { e.actors = []string{frontendID}; e.scope = "read write" },
		},
		{
			name:  "may_act naming someone else",
			user:  func(c *accesstoken.Claims) { c.MayAct = &accesstoken.Actor{Subject: ordersID} },
			steps: []step{{frontendID, userExchange}},
			overrideExpected: func(e *expected) {
				e.code, e.desc = "invalid_request", "the subject token's may_act does not allow this client to act for alice"
			},
		},
		{
			name:  "an issuer the caller's policy does not name",
			steps: []step{{adminID, exchangeOf(protocol.TokenTypeJWT, paymentsID, "")}},
			overrideExpected: func(e *expected) {
				e.code, e.desc = "invalid_request", `policy does not let this client act for subjects of issuer "corp"`
			},
		},
		{
			name:          "a forged user token",
			user:          func(c *accesstoken.Claims) { c.Subject = "forged" },
			steps:         []step{{frontendID, userExchange}},
			securityEvent: false,
			overrideExpected: func(e *expected) {
				e.code, e.desc = "invalid_grant", `the subject token was refused by issuer "corp"`
			},
		},
		{
			name: "impersonation where policy allows it",
			steps: []step{{thiefID, func(t *testing.T, prev string) url.Values {
				v := userExchange(t, prev)
				v.Set("impersonate", "true")
				return v
			}}},
			overrideExpected: func(e *expected) { e.actors = nil; e.scope = "read write" },
		},
		{
			name: "impersonation where policy does not allow it",
			steps: []step{{frontendID, func(t *testing.T, prev string) url.Values {
				v := userExchange(t, prev)
				v.Set("impersonate", "true")
				return v
			}}},
			overrideExpected: func(e *expected) {
				e.code, e.desc = "invalid_request", "policy does not let this client impersonate"
			},
		},
		{
			name: "impersonation of a token with an act chain",
			steps: []step{{frontendID, userExchange}, {ordersID, func(t *testing.T, prev string) url.Values {
				v := ordersExchange(t, prev)
				v.Set("impersonate", "true")
				return v
			}}},
			overrideExpected: func(e *expected) {
				e.code, e.desc = "invalid_request", "a subject token with an act chain cannot be impersonated"
			},
		},
		{
			name:  "no delegation in the caller's rule",
			steps: []step{{frontendID, userExchange}},
			overrideRules: func(r []stsid.Rule) {
				r[0].Delegation = nil
			},
			overrideExpected: func(e *expected) {
				e.code, e.desc = "invalid_request", "policy does not let this client act for others"
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			trail := new(memAudit)
			ext := &fakeIssuer{tokens: map[string]*accesstoken.Claims{}}
			s := ststest.Start(t, func(c *exchange.Config) {
				c.Audit = trail
				c.Policy = delegationPolicy(t, tt.overrideRules)
				c.ExternalIssuers = []exchange.ExternalIssuer{ext}
				c.Logger = hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Info})
			})
			user := accesstoken.Claims{Subject: "alice", Audience: accesstoken.Audience{"spiffe-sts"},
				Expiry: time.Now().Add(time.Hour).Unix(), Scope: "read write"}
			if tt.user != nil {
				tt.user(&user)
			}
			token := ext.userToken(t, user)
			if user.Subject == "forged" {
				token = testca.SignJWT(t, testca.NewKey(t), "corp-key", map[string]any{"iss": corpIssuer, "sub": "alice"})
			}
			want := expected{sub: "alice", actors: []string{ordersID, frontendID}, scope: "read write", maxExpires: 300}
			if tt.overrideExpected != nil {
				tt.overrideExpected(&want)
			}

			var body map[string]any
			var caller string
			for i, st := range tt.steps {
				caller = st.caller
				mark := trail.mark()
				subjectToken := st.params(t, token).Get("subject_token")
				resp, raw := s.Post(t, s.Client(s.WorkloadSVID(t, st.caller)), "application/x-www-form-urlencoded", st.params(t, token).Encode())
				body = nil
				if err := json.Unmarshal(raw, &body); err != nil {
					t.Fatal(err)
				}
				code, _ := body["error"].(string)
				issuedRaw, _ := body["access_token"].(string)
				checkAudit(t, trail, mark, code, resp.Header.Get(exchange.HeaderRequestID), subjectToken, token, issuedRaw)
				if resp.StatusCode != 200 {
					if i != len(tt.steps)-1 {
						t.Fatalf("step %d (%s) failed: %v", i, st.caller, body)
					}
					break
				}
				token, _ = body["access_token"].(string)
			}
			if got := strings.Contains(logs.String(), "security_event=token_laundering"); got != tt.securityEvent {
				t.Errorf("security event logged = %v, want %v; log:\n%s", got, tt.securityEvent, logs.String())
			}
			if strings.Contains(logs.String(), token) {
				t.Error("a raw token was logged")
			}
			if want.code != "" {
				if body["error"] != want.code || body["error_description"] != want.desc {
					t.Fatalf("got %v, want %s: %s", body, want.code, want.desc)
				}
				return
			}
			if body["error"] != nil {
				t.Fatalf("refused: %v", body)
			}
			aud := map[string]string{frontendID: ordersID, ordersID: paymentsID, thiefID: ordersID}[caller]
			claims, err := s.Verifier(aud).Verify(ctx, token, s.WorkloadSVID(t, caller).Certificates[0])
			if err != nil {
				t.Fatalf("the issued token is not bound to the last caller's certificate: %v", err)
			}
			if claims.Subject != want.sub || claims.ClientID != caller || claims.Scope != want.scope {
				t.Errorf("sub %q client_id %q scope %q; want %q %q %q", claims.Subject, claims.ClientID, claims.Scope, want.sub, caller, want.scope)
			}
			if claims.SubjectID == nil || claims.SubjectID.Issuer != corpIssuer || claims.SubjectID.Subject != "alice" {
				t.Errorf("sub_id = %+v", claims.SubjectID)
			}
			if got := claims.ActorChain(); strings.Join(got, " ") != strings.Join(want.actors, " ") {
				t.Errorf("act chain %q, want %q", got, want.actors)
			}
			if exp, _ := body["expires_in"].(float64); exp <= 0 || exp > want.maxExpires {
				t.Errorf("expires_in %v, want in (0, %v]", exp, want.maxExpires)
			}
		})
	}
}

// TestDelegationJWTSVID has a workload send its JWT-SVID to another, which
// acts for it.
func TestDelegationJWTSVID(t *testing.T) {
	s := ststest.Start(t, func(c *exchange.Config) { c.Policy = delegationPolicy(t, nil) })
	tests := []struct {
		name      string
		audience  []string
		caller    string
		expectErr string
	}{
		{name: "sent to the caller", audience: []string{"STS", frontendID}, caller: frontendID},
		{name: "not sent to the caller", audience: []string{"STS"}, caller: frontendID, expectErr: "invalid_grant"},
		{name: "a subject the policy does not name", audience: []string{"STS", ordersID}, caller: ordersID, expectErr: "invalid_request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			aud := append([]string{s.URL}, tt.audience[1:]...)
			svid := s.CA.JWTSVID(t, batchID, aud, time.Now().Add(time.Minute))
			target := map[string]string{frontendID: ordersID, ordersID: paymentsID}[tt.caller]
			resp, raw := s.Post(t, s.Client(s.WorkloadSVID(t, tt.caller)), "application/x-www-form-urlencoded", url.Values{
				"grant_type": {string(protocol.GrantTypeTokenExchange)}, "subject_token": {svid},
				"subject_token_type": {string(protocol.TokenTypeJWT)}, "audience": {target},
			}.Encode())
			var body map[string]any
			_ = json.Unmarshal(raw, &body)
			if tt.expectErr != "" {
				if body["error"] != tt.expectErr {
					t.Fatalf("got %d %v, want %s", resp.StatusCode, body, tt.expectErr)
				}
				return
			}
			tok, _ := body["access_token"].(string)
			claims, err := s.Verifier(target).Verify(context.Background(), tok, s.WorkloadSVID(t, tt.caller).Certificates[0])
			if err != nil {
				t.Fatal(err)
			}
			if claims.Subject != batchID || strings.Join(claims.ActorChain(), " ") != tt.caller {
				t.Fatalf("sub %q act %q", claims.Subject, claims.ActorChain())
			}
		})
	}
}
