package exchange_test

import (
	"context"
	"encoding/json"
	"net/http"
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

const gatewayID = "spiffe://example.org/ns/prod/sa/gw"

// introspectionFixture is a server whose clock and keys a test case
// moves, and a minter with its keys.
type introspectionFixture struct {
	*ststest.STS
	clock  *fakeclock.Clock
	keys   *swapKeys
	minter *issuer.Issuer
}

func newIntrospectionFixture(t *testing.T) *introspectionFixture {
	f := &introspectionFixture{clock: fakeclock.New(time.Now()), keys: &swapKeys{}}
	f.keys.set(t, newSigner(t))
	f.STS = ststest.Start(t, func(c *exchange.Config) {
		var err error
		if f.minter, err = issuer.New(issuer.Config{IssuerURL: c.IssuerURL, Keys: f.keys}); err != nil {
			t.Fatal(err)
		}
		c.Minter, c.Keys, c.Clock = f.minter, f.minter.KeySet(), f.clock.Now
		p, err := stsid.NewPolicy([]stsid.Rule{{
			Pattern:             stsid.RequirePattern("spiffe://example.org/ns/prod/sa/*"),
			Audiences:           []string{ststest.APIAudience},
			MaxTTL:              5 * time.Minute,
			IntrospectAudiences: []string{ststest.OrdersResource},
		}})
		if err != nil {
			t.Fatal(err)
		}
		c.Policy = p
	})
	return f
}

// introspect posts body to /introspect as caller (none when "") and
// returns the status and raw body.
func (f *introspectionFixture) introspect(t *testing.T, caller, contentType, body string) (int, []byte) {
	t.Helper()
	var c *http.Client
	if caller == "" {
		c = f.Client(nil)
	} else {
		c = f.Client(f.WorkloadSVID(t, caller))
	}
	resp, raw := f.PostTo(t, c, protocol.PathIntrospect, contentType, body)
	if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", cc)
	}
	return resp.StatusCode, raw
}

// TestIntrospection introspects, as the resource server Caller, a token
// minted with Claims and bound to the workload's certificate.
func TestIntrospection(t *testing.T) {
	type params struct {
		Caller string
		Claims accesstoken.Claims
		// Token, when set, replaces the minted token; it runs after
		// minting, on the server's fixture.
		Token func(t *testing.T, f *introspectionFixture, minted string) string
	}
	tests := []struct {
		name           string
		overrideParams func(*params)
		expectInactive bool
	}{
		{name: "baseline: the caller is in the audience"},
		{name: "audience listed in the caller's introspect_audiences",
			overrideParams: func(p *params) { p.Claims.Audience = accesstoken.Audience{ststest.OrdersResource} }},
		{name: "caller without a policy rule, in the audience",
			overrideParams: func(p *params) {
				p.Caller, p.Claims.Audience = ststest.DeniedID, accesstoken.Audience{ststest.DeniedID}
			}},
		{name: "not allowed: audience neither the caller nor introspect_audiences",
			overrideParams: func(p *params) { p.Claims.Audience = accesstoken.Audience{ststest.APIAudience} },
			expectInactive: true},
		{name: "not allowed: caller without a rule, audience in others' introspect_audiences",
			overrideParams: func(p *params) {
				p.Caller, p.Claims.Audience = ststest.DeniedID, accesstoken.Audience{ststest.OrdersResource}
			},
			expectInactive: true},
		{name: "expired",
			overrideParams: func(p *params) {
				p.Token = func(_ *testing.T, f *introspectionFixture, raw string) string {
					f.clock.Advance(time.Minute + time.Second)
					return raw
				}
			},
			expectInactive: true},
		{name: "not yet valid",
			overrideParams: func(p *params) {
				p.Token = func(t *testing.T, f *introspectionFixture, _ string) string {
					iss, err := issuer.New(issuer.Config{IssuerURL: f.URL, Keys: f.keys, Clock: func() time.Time { return f.clock.Now().Add(time.Minute) }})
					if err != nil {
						t.Fatal(err)
					}
					claims := p.Claims
					raw, err := iss.Mint(context.Background(), &claims, f.WorkloadSVID(t, ststest.WorkloadID).Certificates[0], time.Minute)
					if err != nil {
						t.Fatal(err)
					}
					return raw
				}
			},
			expectInactive: true},
		{name: "withdrawn: its key no longer in the key set",
			overrideParams: func(p *params) {
				p.Token = func(t *testing.T, f *introspectionFixture, raw string) string {
					f.keys.set(t, newSigner(t))
					return raw
				}
			},
			expectInactive: true},
		{name: "foreign: signed by another key with our issuer",
			overrideParams: func(p *params) {
				p.Token = func(t *testing.T, f *introspectionFixture, _ string) string {
					other := &swapKeys{}
					other.set(t, newSigner(t))
					return mintWith(t, f, f.URL, other, p.Claims)
				}
			},
			expectInactive: true},
		{name: "foreign: our key, another issuer",
			overrideParams: func(p *params) {
				p.Token = func(t *testing.T, f *introspectionFixture, _ string) string {
					return mintWith(t, f, "https://other.example", f.keys, p.Claims)
				}
			},
			expectInactive: true},
		{name: "foreign: a JWT-SVID",
			overrideParams: func(p *params) {
				p.Token = func(t *testing.T, f *introspectionFixture, _ string) string {
					return f.CA.JWTSVID(t, ststest.WorkloadID, []string{ststest.OtherID}, time.Now().Add(time.Minute))
				}
			},
			expectInactive: true},
		{name: "malformed",
			overrideParams: func(p *params) {
				p.Token = func(*testing.T, *introspectionFixture, string) string { return "not.a.token" }
			},
			expectInactive: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := params{
				Caller: ststest.OtherID,
				Claims: accesstoken.Claims{
					Subject: ststest.WorkloadID, ClientID: ststest.WorkloadID, Scope: "read write",
					Audience: accesstoken.Audience{ststest.OtherID},
					Actor:    &accesstoken.Actor{Subject: gatewayID, Actor: &accesstoken.Actor{Subject: "spiffe://example.org/ns/prod/sa/edge"}},
				},
			}
			if tt.overrideParams != nil {
				tt.overrideParams(&p)
			}
			f := newIntrospectionFixture(t)
			claims := p.Claims
			raw, err := f.minter.Mint(context.Background(), &claims, f.WorkloadSVID(t, ststest.WorkloadID).Certificates[0], time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			if p.Token != nil {
				raw = p.Token(t, f, raw)
			}
			status, body := f.introspect(t, p.Caller, formType, url.Values{"token": {raw}, "token_type_hint": {"refresh_token"}}.Encode())
			if status != http.StatusOK {
				t.Fatalf("status %d %s", status, body)
			}
			if tt.expectInactive {
				if string(body) != `{"active":false}` {
					t.Fatalf("got %s, want {\"active\":false}", body)
				}
				return
			}
			var got map[string]any
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatal(err)
			}
			want := map[string]any{
				"active": true, "scope": claims.Scope, "client_id": claims.ClientID, "token_type": "Bearer",
				"exp": float64(claims.Expiry), "iat": float64(claims.IssuedAt), "nbf": float64(claims.NotBefore),
				"sub": claims.Subject, "aud": claims.Audience[0], "iss": f.URL, "jti": claims.JWTID,
				"cnf": map[string]any{"x5t#S256": accesstoken.Thumbprint(f.WorkloadSVID(t, ststest.WorkloadID).Certificates[0])},
				"act": map[string]any{"sub": gatewayID, "act": map[string]any{"sub": "spiffe://example.org/ns/prod/sa/edge"}},
			}
			if toJSON(got) != toJSON(want) {
				t.Errorf("got  %s\nwant %s", toJSON(got), toJSON(want))
			}
		})
	}
}

// mintWith mints claims for the workload's certificate with keys under
// issuerURL.
func mintWith(t *testing.T, f *introspectionFixture, issuerURL string, keys *swapKeys, claims accesstoken.Claims) string {
	t.Helper()
	iss, err := issuer.New(issuer.Config{IssuerURL: issuerURL, Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := iss.Mint(context.Background(), &claims, f.WorkloadSVID(t, ststest.WorkloadID).Certificates[0], time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// TestIntrospectionRequests covers the requests refused before any
// token is looked at.
func TestIntrospectionRequests(t *testing.T) {
	f := newIntrospectionFixture(t)
	token := url.Values{"token": {"x"}}.Encode()
	tests := []struct {
		name, caller, contentType, body string
		expectStatus                    int
		expectError                     string
	}{
		{name: "no client certificate", contentType: formType, body: token,
			expectStatus: 401, expectError: `{"error":"invalid_client","error_description":"a client certificate (X509-SVID) is required"}`},
		{name: "no token", caller: ststest.OtherID, contentType: formType, body: "token_type_hint=access_token",
			expectStatus: 400, expectError: `{"error":"invalid_request","error_description":"token is required"}`},
		{name: "token twice", caller: ststest.OtherID, contentType: formType, body: token + "&" + token,
			expectStatus: 400, expectError: `{"error":"invalid_request","error_description":"token must be sent once"}`},
		{name: "JSON body", caller: ststest.OtherID, contentType: "application/json", body: `{"token":"x"}`,
			expectStatus: 400, expectError: `{"error":"invalid_request","error_description":"content type must be application/x-www-form-urlencoded"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := f.introspect(t, tt.caller, tt.contentType, tt.body)
			if status != tt.expectStatus || string(body) != tt.expectError {
				t.Errorf("got %d %s, want %d %s", status, body, tt.expectStatus, tt.expectError)
			}
		})
	}
	resp, err := f.Client(f.WorkloadSVID(t, ststest.OtherID)).Get(f.URL + protocol.PathIntrospect)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != http.MethodPost {
		t.Errorf("GET: %d Allow %q", resp.StatusCode, resp.Header.Get("Allow"))
	}
}

// TestIntrospectionMetadata checks the RFC 8414 advertisement.
func TestIntrospectionMetadata(t *testing.T) {
	f := newIntrospectionFixture(t)
	resp, err := f.Client(nil).Get(f.URL + protocol.PathOAuthMetadata)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var md map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&md); err != nil {
		t.Fatal(err)
	}
	if md["introspection_endpoint"] != f.URL+protocol.PathIntrospect ||
		toJSON(md["introspection_endpoint_auth_methods_supported"]) != `["tls_client_auth"]` {
		t.Errorf("metadata %v", md)
	}
}
