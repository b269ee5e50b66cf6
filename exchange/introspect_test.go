package exchange_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/audit"
	"github.com/spiffe-sts/spiffe-sts/exchange"
	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
	"github.com/spiffe-sts/spiffe-sts/internal/fakeclock"
	"github.com/spiffe-sts/spiffe-sts/internal/forwardedtest"
	"github.com/spiffe-sts/spiffe-sts/internal/ststest"
	"github.com/spiffe-sts/spiffe-sts/issuer"
	"github.com/spiffe-sts/spiffe-sts/metrics"
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
	trail  *memAudit
	reg    *prometheus.Registry
	// outcomes counts the introspections checked, by metric outcome.
	outcomes map[string]int
}

func newIntrospectionFixture(t *testing.T, overrideConfig ...func(*exchange.Config)) *introspectionFixture {
	f := &introspectionFixture{clock: fakeclock.New(time.Now()), keys: &swapKeys{}, trail: &memAudit{}, reg: prometheus.NewRegistry(), outcomes: map[string]int{}}
	f.keys.set(t, newSigner(t))
	f.STS = ststest.Start(t, func(c *exchange.Config) {
		c.Audit, c.Metrics = f.trail, metrics.NewExchange(f.reg)
		var err error
		if f.minter, err = issuer.New(issuer.Config{IssuerURL: c.IssuerURL, Keys: f.keys, Clock: f.clock.Now}); err != nil {
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
		for _, o := range overrideConfig {
			o(c)
		}
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
		// verified: the token verified, so its jti is audited even
		// when inactive; noKID: its header does not parse.
		verified, noKID bool
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
			expectInactive: true, verified: true},
		{name: "not allowed: caller without a rule, audience in others' introspect_audiences",
			overrideParams: func(p *params) {
				p.Caller, p.Claims.Audience = ststest.DeniedID, accesstoken.Audience{ststest.OrdersResource}
			},
			expectInactive: true, verified: true},
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
			expectInactive: true, noKID: true},
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
			mark := f.trail.mark()
			status, body := f.introspect(t, p.Caller, formType, url.Values{"token": {raw}, "token_type_hint": {"refresh_token"}}.Encode())
			if status != http.StatusOK {
				t.Fatalf("status %d %s", status, body)
			}
			rec := checkIntrospectionAudit(t, f, mark, !tt.expectInactive, "", raw)
			if rec.Caller != p.Caller || rec.X5TS256 != accesstoken.Thumbprint(f.WorkloadSVID(t, p.Caller).Certificates[0]) {
				t.Errorf("audited caller %q x5t#S256 %q, want %s", rec.Caller, rec.X5TS256, p.Caller)
			}
			if wantJTI := !tt.expectInactive || tt.verified; (rec.JTI == claims.JWTID) != wantJTI || (rec.JTI != "") != wantJTI {
				t.Errorf("audited jti %q, want it (%s) only for a verified token", rec.JTI, claims.JWTID)
			}
			if (rec.KID == "") != tt.noKID {
				t.Errorf("audited kid %q, want one unless the header does not parse", rec.KID)
			}
			if tt.expectInactive && rec.Detail == "" {
				t.Errorf("inactive record without the reason in detail")
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
	iss, err := issuer.New(issuer.Config{IssuerURL: issuerURL, Keys: keys, Clock: f.clock.Now})
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
			mark := f.trail.mark()
			status, body := f.introspect(t, tt.caller, tt.contentType, tt.body)
			if status != tt.expectStatus || string(body) != tt.expectError {
				t.Errorf("got %d %s, want %d %s", status, body, tt.expectStatus, tt.expectError)
			}
			var perr protocol.Error
			if err := json.Unmarshal(body, &perr); err != nil {
				t.Fatal(err)
			}
			rec := checkIntrospectionAudit(t, f, mark, false, perr.Code)
			if rec.Reason != perr.Description || rec.Caller != tt.caller {
				t.Errorf("audited reason %q caller %q, want %q %q", rec.Reason, rec.Caller, perr.Description, tt.caller)
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

// TestIntrospectionAuditTrail checks the record of an introspection
// through a trusted proxy, which names both, and that an introspection
// is never answered unaudited when the audit trail is required.
func TestIntrospectionAuditTrail(t *testing.T) {
	t.Run("through a trusted proxy", func(t *testing.T) {
		f := newIntrospectionFixture(t, func(c *exchange.Config) {
			c.Forwarded = forwardedtest.Policy(t, c.X509Bundles, "spiffe://example.org/ns/ingress/sa/*")
		})
		raw := f.mint(t, ststest.OtherID)
		req, err := http.NewRequest(http.MethodPost, f.URL+protocol.PathIntrospect, strings.NewReader(url.Values{"token": {raw}}.Encode()))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", formType)
		req.Header.Set("X-Forwarded-Client-Cert", xfccElement(f.WorkloadSVID(t, ststest.OtherID).Certificates[0]))
		mark := f.trail.mark()
		resp, err := f.Client(f.WorkloadSVID(t, ingressID)).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d", resp.StatusCode)
		}
		rec := checkIntrospectionAudit(t, f, mark, true, "", raw)
		if rec.Caller != ststest.OtherID || rec.ProxySPIFFEID != ingressID || rec.RequestID != resp.Header.Get(exchange.HeaderRequestID) {
			t.Errorf("record caller %q proxy %q request_id %q; want %s via %s, id %q", rec.Caller, rec.ProxySPIFFEID, rec.RequestID,
				ststest.OtherID, ingressID, resp.Header.Get(exchange.HeaderRequestID))
		}
	})
	t.Run("audit required and failing", func(t *testing.T) {
		trail := &memAudit{fail: errors.New("disk full")}
		f := newIntrospectionFixture(t, func(c *exchange.Config) { c.Audit, c.AuditRequired = trail, true })
		raw := f.mint(t, ststest.OtherID)
		status, body := f.introspect(t, ststest.OtherID, formType, url.Values{"token": {raw}}.Encode())
		if status != http.StatusServiceUnavailable || string(body) != `{"error":"temporarily_unavailable","error_description":"the audit trail is unavailable; retry later"}` {
			t.Fatalf("got %d %s, want 503 temporarily_unavailable", status, body)
		}
		if got := gathered(t, f.reg, "spiffe_sts_introspections_total", map[string]string{"outcome": "temporarily_unavailable"}); got != 1 {
			t.Errorf("introspections_total{temporarily_unavailable} = %v, want 1", got)
		}
	})
}

// mint returns a token of the workload for audience aud, bound to its
// certificate.
func (f *introspectionFixture) mint(t *testing.T, aud string) string {
	t.Helper()
	claims := accesstoken.Claims{Subject: ststest.WorkloadID, ClientID: ststest.WorkloadID, Audience: accesstoken.Audience{aud}}
	raw, err := f.minter.Mint(context.Background(), &claims, f.WorkloadSVID(t, ststest.WorkloadID).Certificates[0], time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// checkIntrospectionAudit checks that one introspection record was
// written after mark, active, inactive or refused with code, without
// secrets, and that the introspection metric counted its outcome once
// more; it returns the record.
func checkIntrospectionAudit(t *testing.T, f *introspectionFixture, mark int, active bool, code string, secrets ...string) audit.Record {
	t.Helper()
	lines := f.trail.since(mark)
	if len(lines) != 1 {
		t.Fatalf("%d audit records, want 1: %q", len(lines), lines)
	}
	var rec audit.Record
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
		t.Fatal(err)
	}
	want := audit.OutcomeInactive
	switch {
	case code != "":
		want = audit.OutcomeRefused
	case active:
		want = audit.OutcomeActive
	}
	if rec.Operation != audit.OperationIntrospect || rec.Outcome != want || rec.Error != code {
		t.Errorf("audit operation, outcome, error = %q, %q, %q; want %q, %q, %q", rec.Operation, rec.Outcome, rec.Error, audit.OperationIntrospect, want, code)
	}
	if rec.RequestID == "" || rec.Time.IsZero() || rec.Transport != "http" {
		t.Errorf("audit record lacks request_id, time or transport: %s", lines[0])
	}
	checkNoSecrets(t, lines[0], secrets...)
	outcome := want
	if code != "" {
		outcome = code
	}
	f.outcomes[outcome]++
	if got := gathered(t, f.reg, "spiffe_sts_introspections_total", map[string]string{"outcome": outcome}); got != float64(f.outcomes[outcome]) {
		t.Errorf(`introspections_total{outcome=%q} = %v, want %d`, outcome, got, f.outcomes[outcome])
	}
	return rec
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
