package exchange_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/exchange"
	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
	"github.com/spiffe-sts/spiffe-sts/internal/ststest"
	"github.com/spiffe-sts/spiffe-sts/internal/testca"
	"github.com/spiffe-sts/spiffe-sts/issuer"
	stsid "github.com/spiffe-sts/spiffe-sts/spiffeid"
)

const (
	workloadID = ststest.WorkloadID
	otherID    = ststest.OtherID
	deniedID   = ststest.DeniedID
	stsID      = ststest.ServerID
	apiAud     = ststest.APIAudience
)

// fixture adapts ststest.STS to the short helpers these tests use.
type fixture struct {
	*ststest.STS
	ca, evil  *testca.CA
	stsSVID   *x509svid.SVID
	issuerURL string
	iss       *issuer.Issuer
	server    *exchange.Server
}

func newFixture(t testing.TB, overrideConfig func(*exchange.Config)) *fixture {
	t.Helper()
	s := ststest.Start(t, overrideConfig)
	return &fixture{STS: s, ca: s.CA, evil: s.Evil, stsSVID: s.SVID, issuerURL: s.URL, iss: s.Issuer, server: s.Server}
}

func (f *fixture) svid(t testing.TB, id string) *x509svid.SVID { return f.WorkloadSVID(t, id) }

func (f *fixture) client(svid *x509svid.SVID) *http.Client { return f.Client(svid) }

type response struct {
	status int
	header http.Header
	body   map[string]any
}

func (f *fixture) post(t testing.TB, c *http.Client, contentType, body string) response {
	t.Helper()
	resp, raw := f.Post(t, c, contentType, body)
	out := response{status: resp.StatusCode, header: resp.Header}
	if err := json.Unmarshal(raw, &out.body); err != nil {
		t.Fatalf("response is not JSON: %q", raw)
	}
	return out
}

func (f *fixture) jwtSVID(t testing.TB, sub string) string { return f.JWTSVID(t, sub) }

func (f *fixture) verifier(aud string) *accesstoken.Verifier { return f.Verifier(aud) }

// exchangeParams is the baseline token request: the workload's JWT-SVID
// for a token for apiAud.
func (f *fixture) exchangeParams(t testing.TB) url.Values {
	return url.Values{
		"grant_type":         {string(protocol.GrantTypeTokenExchange)},
		"subject_token":      {f.jwtSVID(t, workloadID)},
		"subject_token_type": {string(protocol.TokenTypeJWT)},
		"audience":           {apiAud},
	}
}

// caller returns the SPIFFE ID a test case calls as, workloadID when
// override is "", and the X509-SVID it presents: none for "-", one from
// the untrusted CA for an evil.example ID.
func (f *fixture) caller(t testing.TB, override string) (id string, svid *x509svid.SVID) {
	id = workloadID
	if override != "" {
		id = override
	}
	switch {
	case id == "-":
		return id, nil
	case strings.HasPrefix(id, "spiffe://evil.example/"):
		return id, f.evil.SVID(t, id, time.Hour)
	default:
		return id, f.svid(t, id)
	}
}

const formType = "application/x-www-form-urlencoded"

func TestTokenEndpoint(t *testing.T) {
	trail := new(memAudit)
	f := newFixture(t, func(c *exchange.Config) { c.Audit = trail })
	ctx := context.Background()
	// A token issued to the workload, for the access_token cases.
	issued := func(t *testing.T, id, scope string, ttl time.Duration) string {
		claims := accesstoken.Claims{Subject: id, ClientID: id, Audience: accesstoken.Audience{apiAud}, Scope: scope}
		raw, err := f.iss.Mint(ctx, &claims, f.svid(t, id).Certificates[0], ttl)
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}

	type expected struct {
		status   int
		code     string
		desc     string
		audience []string
		scope    any // nil: absent from the response
	}
	tests := []struct {
		name             string
		caller           string // SPIFFE ID of the client certificate; "-" for none
		overrideParams   func(t *testing.T, p url.Values)
		contentType      string
		overrideBody     func(string) string
		overrideExpected func(*expected)
	}{
		{name: "baseline: JWT-SVID exchange"},
		{name: "client_id equal to the SPIFFE ID", overrideParams: func(_ *testing.T, p url.Values) { p.Set("client_id", workloadID) }},
		{
			name: "client_credentials",
			overrideParams: func(_ *testing.T, p url.Values) {
				p.Set("grant_type", "client_credentials")
				p.Del("subject_token")
				p.Del("subject_token_type")
			},
		},
		{
			name: "client_credentials with a subject_token",
			overrideParams: func(_ *testing.T, p url.Values) {
				p.Set("grant_type", "client_credentials")
			},
			overrideExpected: func(e *expected) {
				e.status, e.code, e.desc = 400, "invalid_request", "client_credentials takes no subject_token or actor_token"
			},
		},
		{
			name: "scope narrowed to what policy allows",
			overrideParams: func(_ *testing.T, p url.Values) {
				p.Set("scope", "read delete")
			},
			overrideExpected: func(e *expected) { e.scope = "read" },
		},
		{
			name: "scope requested and fully allowed is not echoed",
			overrideParams: func(_ *testing.T, p url.Values) {
				p.Set("scope", "write read")
			},
			overrideExpected: func(e *expected) { e.scope = nil },
		},
		{
			name:           "no scope allowed",
			overrideParams: func(_ *testing.T, p url.Values) { p.Set("scope", "delete") },
			overrideExpected: func(e *expected) {
				e.status, e.code, e.desc = 400, "invalid_scope", "none of the requested scopes is allowed for this client"
			},
		},
		{
			name:           "malformed scope",
			overrideParams: func(_ *testing.T, p url.Values) { p.Set("scope", `read "x"`) },
			overrideExpected: func(e *expected) {
				e.status, e.code, e.desc = 400, "invalid_scope", "scope must be space-separated scope tokens (RFC 6749 §3.3)"
			},
		},
		{
			name: "resource and audience both become aud",
			overrideParams: func(_ *testing.T, p url.Values) {
				p.Add("resource", "https://api.example.org/orders")
			},
			overrideExpected: func(e *expected) { e.audience = []string{apiAud, "https://api.example.org/orders"} },
		},
		{
			name:           "audience not allowed",
			overrideParams: func(_ *testing.T, p url.Values) { p.Set("audience", "spiffe://example.org/other") },
			overrideExpected: func(e *expected) {
				e.status, e.code, e.desc = 400, "invalid_target", `audience "spiffe://example.org/other" is not allowed for this client`
			},
		},
		{
			name:           "resource with a fragment",
			overrideParams: func(_ *testing.T, p url.Values) { p.Set("resource", "https://api.example.org/orders#x") },
			overrideExpected: func(e *expected) {
				e.status, e.code, e.desc = 400, "invalid_target", "resource must be an absolute URI without a fragment"
			},
		},
		{
			name:           "no audience",
			overrideParams: func(_ *testing.T, p url.Values) { p.Del("audience") },
			overrideExpected: func(e *expected) {
				e.status, e.code, e.desc = 400, "invalid_request", "audience or resource is required"
			},
		},
		{
			name:           "missing grant_type",
			overrideParams: func(_ *testing.T, p url.Values) { p.Del("grant_type") },
			overrideExpected: func(e *expected) {
				e.status, e.code, e.desc = 400, "invalid_request", "grant_type is required"
			},
		},
		{
			name:           "unsupported grant_type",
			overrideParams: func(_ *testing.T, p url.Values) { p.Set("grant_type", "password") },
			overrideExpected: func(e *expected) {
				e.status, e.code = 400, "unsupported_grant_type"
				e.desc = "supported grant types are urn:ietf:params:oauth:grant-type:token-exchange and client_credentials"
			},
		},
		{
			name:           "repeated parameter",
			overrideParams: func(_ *testing.T, p url.Values) { p.Add("scope", "read"); p.Add("scope", "write") },
			overrideExpected: func(e *expected) {
				e.status, e.code, e.desc = 400, "invalid_request", "parameter scope is repeated"
			},
		},
		{
			// RFC 6749 §3.2: as if omitted, so the default scopes apply
			// (TestEmptyParameters covers every parameter).
			name:           "empty parameter",
			overrideParams: func(_ *testing.T, p url.Values) { p.Set("scope", "") },
		},
		{
			name:         "malformed encoding",
			overrideBody: func(b string) string { return b + "&scope=%zz" },
			overrideExpected: func(e *expected) {
				e.status, e.code, e.desc = 400, "invalid_request", `malformed form encoding of "scope"`
			},
		},
		{
			name:        "wrong content type",
			contentType: "text/plain",
			overrideExpected: func(e *expected) {
				e.status, e.code, e.desc = 400, "invalid_request", "content type must be application/x-www-form-urlencoded or application/json"
			},
		},
		{
			name:        "form body sent as JSON",
			contentType: "application/json",
			overrideExpected: func(e *expected) {
				e.status, e.code, e.desc = 400, "invalid_request", "the JSON body must be an object of string parameters"
			},
		},
		{
			name:         "body over the limit",
			overrideBody: func(b string) string { return b + "&pad=" + strings.Repeat("a", 70<<10) },
			overrideExpected: func(e *expected) {
				e.status, e.code, e.desc = 400, "invalid_request", "request body exceeds 65536 bytes"
			},
		},
		{
			name:           "client secret alongside mTLS",
			overrideParams: func(_ *testing.T, p url.Values) { p.Set("client_secret", "s3cret") },
			overrideExpected: func(e *expected) {
				e.status, e.code, e.desc = 400, "invalid_request", "authenticate with the X509-SVID (tls_client_auth) only"
			},
		},
		{
			name:   "no client certificate",
			caller: "-",
			overrideExpected: func(e *expected) {
				e.status, e.code, e.desc = 401, "invalid_client", "a client certificate (X509-SVID) is required"
			},
		},
		{
			name:   "client from an untrusted trust domain",
			caller: "spiffe://evil.example/ns/prod/sa/web",
			overrideExpected: func(e *expected) {
				e.status, e.code, e.desc = 401, "invalid_client", "the client certificate is not a valid X509-SVID of a trusted trust domain"
			},
		},
		{
			name:           "client_id of someone else",
			overrideParams: func(_ *testing.T, p url.Values) { p.Set("client_id", otherID) },
			overrideExpected: func(e *expected) {
				e.status, e.code, e.desc = 401, "invalid_client", "client_id does not match the client certificate's SPIFFE ID"
			},
		},
		{
			name:   "caller denied by policy",
			caller: deniedID,
			overrideParams: func(t *testing.T, p url.Values) {
				p.Set("subject_token", f.jwtSVID(t, deniedID))
			},
			overrideExpected: func(e *expected) {
				e.status, e.code, e.desc = 400, "unauthorized_client", "no policy rule allows "+deniedID
			},
		},
		{
			name: "JWT-SVID of another workload, not sent to the caller",
			overrideParams: func(t *testing.T, p url.Values) {
				p.Set("subject_token", f.jwtSVID(t, otherID))
			},
			overrideExpected: func(e *expected) {
				e.status, e.code, e.desc = 400, "invalid_grant", "the subject token was neither issued nor sent to this client"
			},
		},
		{
			name: "forged JWT-SVID",
			overrideParams: func(t *testing.T, p url.Values) {
				p.Set("subject_token", testca.SignJWT(t, testca.NewKey(t), "jwt-example.org", map[string]any{
					"sub": workloadID, "aud": []string{f.issuerURL}, "exp": time.Now().Add(time.Minute).Unix(),
				}))
			},
			overrideExpected: func(e *expected) { e.status, e.code, e.desc = 400, "invalid_grant", "*" },
		},
		{
			name: "expired JWT-SVID",
			overrideParams: func(t *testing.T, p url.Values) {
				p.Set("subject_token", f.ca.JWTSVID(t, workloadID, []string{f.issuerURL}, time.Now().Add(-2*time.Second)))
			},
			overrideExpected: func(e *expected) {
				e.status, e.code, e.desc = 400, "invalid_grant", "the subject token has expired"
			},
		},
		{
			name: "not yet valid JWT-SVID",
			overrideParams: func(t *testing.T, p url.Values) {
				p.Set("subject_token", testca.SignJWT(t, f.ca.JWTKey(), f.ca.JWTKeyID(), map[string]any{
					"sub": workloadID, "aud": []string{f.issuerURL}, "exp": time.Now().Add(time.Hour).Unix(),
					"nbf": time.Now().Add(30 * time.Second).Unix(),
				}))
			},
			overrideExpected: func(e *expected) {
				e.status, e.code, e.desc = 400, "invalid_grant", "the subject token is not yet valid"
			},
		},
		{
			name: "JWT-SVID for another audience",
			overrideParams: func(t *testing.T, p url.Values) {
				p.Set("subject_token", f.ca.JWTSVID(t, workloadID, []string{"spiffe://example.org/someone-else"}, time.Now().Add(time.Minute)))
			},
			overrideExpected: func(e *expected) { e.status, e.code, e.desc = 400, "invalid_grant", "*" },
		},
		{
			name: "JWT-SVID audience naming the server's SPIFFE ID",
			overrideParams: func(t *testing.T, p url.Values) {
				p.Set("subject_token", f.ca.JWTSVID(t, workloadID, []string{stsID}, time.Now().Add(time.Minute)))
			},
		},
		{
			name: "JWT-SVID from an untrusted trust domain",
			overrideParams: func(t *testing.T, p url.Values) {
				p.Set("subject_token", f.evil.JWTSVID(t, "spiffe://evil.example/ns/prod/sa/web", []string{f.issuerURL}, time.Now().Add(time.Minute)))
			},
			overrideExpected: func(e *expected) { e.status, e.code, e.desc = 400, "invalid_grant", "*" },
		},
		{
			name:           "missing subject_token",
			overrideParams: func(_ *testing.T, p url.Values) { p.Del("subject_token") },
			overrideExpected: func(e *expected) {
				e.status, e.code, e.desc = 400, "invalid_request", "subject_token is required"
			},
		},
		{
			name: "unsupported subject_token_type",
			overrideParams: func(_ *testing.T, p url.Values) {
				p.Set("subject_token_type", "urn:ietf:params:oauth:token-type:saml2")
			},
			overrideExpected: func(e *expected) {
				e.status, e.code = 400, "invalid_request"
				e.desc = "subject_token_type must be urn:ietf:params:oauth:token-type:jwt or urn:ietf:params:oauth:token-type:access_token"
			},
		},
		{
			name: "actor_token naming the caller",
			overrideParams: func(t *testing.T, p url.Values) {
				p.Set("actor_token", f.jwtSVID(t, workloadID))
				p.Set("actor_token_type", string(protocol.TokenTypeJWT))
			},
		},
		{
			name: "actor_token naming someone else",
			overrideParams: func(t *testing.T, p url.Values) {
				p.Set("actor_token", f.jwtSVID(t, otherID))
				p.Set("actor_token_type", string(protocol.TokenTypeJWT))
			},
			overrideExpected: func(e *expected) {
				e.status, e.code, e.desc = 400, "invalid_request", "actor_token must name the caller, "+workloadID
			},
		},
		{
			name:           "actor_token without its type",
			overrideParams: func(t *testing.T, p url.Values) { p.Set("actor_token", f.jwtSVID(t, workloadID)) },
			overrideExpected: func(e *expected) {
				e.status, e.code, e.desc = 400, "invalid_request", "actor_token and actor_token_type go together"
			},
		},
		{
			name:           "impersonation of oneself",
			overrideParams: func(_ *testing.T, p url.Values) { p.Set("impersonate", "true") },
			overrideExpected: func(e *expected) {
				e.status, e.code, e.desc = 400, "invalid_request", "impersonation needs a subject token of someone else"
			},
		},
		{
			name:           "requested_token_type jwt",
			overrideParams: func(_ *testing.T, p url.Values) { p.Set("requested_token_type", string(protocol.TokenTypeJWT)) },
		},
		{
			name: "unsupported requested_token_type",
			overrideParams: func(_ *testing.T, p url.Values) {
				p.Set("requested_token_type", "urn:ietf:params:oauth:token-type:id_token")
			},
			overrideExpected: func(e *expected) {
				e.status, e.code = 400, "invalid_request"
				e.desc = "requested_token_type must be urn:ietf:params:oauth:token-type:access_token or urn:ietf:params:oauth:token-type:jwt"
			},
		},
		{
			name: "own access token keeps its audience and scope",
			overrideParams: func(t *testing.T, p url.Values) {
				p.Set("subject_token", issued(t, workloadID, "read write", time.Minute))
				p.Set("subject_token_type", string(protocol.TokenTypeAccessToken))
				p.Del("audience")
			},
			overrideExpected: func(e *expected) { e.scope = "read write" },
		},
		{
			name: "own access token never widens its scope",
			overrideParams: func(t *testing.T, p url.Values) {
				p.Set("subject_token", issued(t, workloadID, "read", time.Minute))
				p.Set("subject_token_type", string(protocol.TokenTypeAccessToken))
				p.Set("scope", "read admin")
			},
			overrideExpected: func(e *expected) { e.scope = "read" },
		},
		{
			name: "access token issued to another client",
			overrideParams: func(t *testing.T, p url.Values) {
				p.Set("subject_token", issued(t, otherID, "read", time.Minute))
				p.Set("subject_token_type", string(protocol.TokenTypeAccessToken))
			},
			overrideExpected: func(e *expected) {
				e.status, e.code, e.desc = 400, "invalid_grant", "the subject token was neither issued nor sent to this client"
			},
		},
		{
			name: "JWT-SVID presented as an access token",
			overrideParams: func(_ *testing.T, p url.Values) {
				p.Set("subject_token_type", string(protocol.TokenTypeAccessToken))
			},
			overrideExpected: func(e *expected) {
				e.status, e.code, e.desc = 400, "invalid_grant", "the subject token is not an access token issued by this server"
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			params := f.exchangeParams(t)
			if tt.overrideParams != nil {
				tt.overrideParams(t, params)
			}
			want := expected{status: 200, audience: []string{apiAud}, scope: "read"}
			if params.Get("scope") != "" {
				want.scope = nil
			}
			if tt.overrideExpected != nil {
				tt.overrideExpected(&want)
			}
			caller, svid := f.caller(t, tt.caller)
			client := f.client(svid)
			contentType := formType
			if tt.contentType != "" {
				contentType = tt.contentType
			}
			body := params.Encode()
			if tt.overrideBody != nil {
				body = tt.overrideBody(body)
			}

			mark := trail.mark()
			resp := f.post(t, client, contentType, body)
			if resp.status != want.status {
				t.Fatalf("status = %d, want %d; body %v", resp.status, want.status, resp.body)
			}
			issuedRaw, _ := resp.body["access_token"].(string)
			checkAudit(t, trail, mark, want.code, resp.header.Get(exchange.HeaderRequestID),
				params.Get("subject_token"), params.Get("actor_token"), issuedRaw)
			if got := resp.header.Get("Cache-Control"); got != "no-store" {
				t.Errorf("Cache-Control = %q, want no-store", got)
			}
			if want.code != "" {
				if resp.body["error"] != want.code {
					t.Errorf("error = %v, want %s", resp.body["error"], want.code)
				}
				if want.desc != "*" && resp.body["error_description"] != want.desc {
					t.Errorf("error_description = %q, want %q", resp.body["error_description"], want.desc)
				}
				if _, ok := resp.body["access_token"]; ok {
					t.Error("an error response carries an access token")
				}
				return
			}
			if got := resp.body["scope"]; got != want.scope {
				t.Errorf("scope = %v, want %v", got, want.scope)
			}
			if resp.body["token_type"] != "Bearer" {
				t.Errorf("token_type = %v", resp.body["token_type"])
			}
			if exp, _ := resp.body["expires_in"].(float64); exp <= 0 || exp > 300 {
				t.Errorf("expires_in = %v, want in (0, 300]", resp.body["expires_in"])
			}
			raw, _ := resp.body["access_token"].(string)
			claims, err := f.verifier(want.audience[0]).Verify(ctx, raw, f.svid(t, caller).Certificates[0])
			if err != nil {
				t.Fatalf("issued token does not verify for the caller's certificate: %v", err)
			}
			if claims.Subject != caller || claims.ClientID != caller {
				t.Errorf("sub, client_id = %q, %q; want %q", claims.Subject, claims.ClientID, caller)
			}
			if strings.Join(claims.Audience, " ") != strings.Join(want.audience, " ") {
				t.Errorf("aud = %q, want %q", claims.Audience, want.audience)
			}
			if _, err := f.verifier(want.audience[0]).Verify(ctx, raw, f.svid(t, otherID).Certificates[0]); err == nil {
				t.Error("the token verifies with another workload's certificate")
			}
		})
	}
}

func TestTokenLifetimeCappedAtSVIDExpiry(t *testing.T) {
	f := newFixture(t, nil)
	svid := f.ca.SVID(t, workloadID, 40*time.Second)
	resp := f.post(t, f.client(svid), formType, url.Values{
		"grant_type": {"client_credentials"}, "audience": {apiAud},
	}.Encode())
	if resp.status != 200 {
		t.Fatalf("status %d: %v", resp.status, resp.body)
	}
	exp, _ := resp.body["expires_in"].(float64)
	if exp <= 0 || exp > 40 {
		t.Fatalf("expires_in = %v, want at most the SVID's remaining 40s", exp)
	}
}

func TestExpiredClientCertificate(t *testing.T) {
	now := time.Now()
	f := newFixture(t, func(c *exchange.Config) { c.Clock = func() time.Time { return now.Add(2 * time.Hour) } })
	resp := f.post(t, f.client(f.svid(t, workloadID)), formType, url.Values{
		"grant_type": {"client_credentials"}, "audience": {apiAud},
	}.Encode())
	if resp.status != 401 || resp.body["error"] != "invalid_client" {
		t.Fatalf("got %d %v, want 401 invalid_client", resp.status, resp.body)
	}
}

func TestTokenEndpointRejectsGet(t *testing.T) {
	f := newFixture(t, nil)
	resp, err := f.client(f.svid(t, workloadID)).Get(f.issuerURL + protocol.PathToken)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "POST" || body["error"] != "invalid_request" {
		t.Fatalf("got %d Allow=%q %v", resp.StatusCode, resp.Header.Get("Allow"), body)
	}
}

func TestMetadataAndJWKSWithoutClientCertificate(t *testing.T) {
	f := newFixture(t, nil)
	c := f.client(nil)
	for _, path := range []string{protocol.PathOAuthMetadata, protocol.PathOpenIDMetadata} {
		resp, err := c.Get(f.issuerURL + path)
		if err != nil {
			t.Fatal(err)
		}
		var md map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&md); err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		want := map[string]any{
			"issuer":         f.issuerURL,
			"token_endpoint": f.issuerURL + "/token",
			"jwks_uri":       f.issuerURL + "/jwks",
			"tls_client_certificate_bound_access_tokens": true,
		}
		for k, v := range want {
			if md[k] != v {
				t.Errorf("%s: %s = %v, want %v", path, k, md[k], v)
			}
		}
		aliases, _ := md["mtls_endpoint_aliases"].(map[string]any)
		if aliases["token_endpoint"] != f.issuerURL+"/token" {
			t.Errorf("%s: mtls_endpoint_aliases = %v", path, md["mtls_endpoint_aliases"])
		}
		if !strings.Contains(toJSON(md["grant_types_supported"]), "token-exchange") || toJSON(md["token_endpoint_auth_methods_supported"]) != `["tls_client_auth"]` {
			t.Errorf("%s: grant types %v, auth methods %v", path, md["grant_types_supported"], md["token_endpoint_auth_methods_supported"])
		}
	}
	resp, err := c.Get(f.issuerURL + protocol.PathJWKS)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	keys, err := accesstoken.ParseStaticKeySet(raw)
	if err != nil || keys.Len() != 1 {
		t.Fatalf("JWKS %s: %v", raw, err)
	}
	if strings.Contains(string(raw), `"d"`) {
		t.Fatal("JWKS publishes private key material")
	}
}

func TestReadiness(t *testing.T) {
	f := newFixture(t, nil)
	c := f.client(nil)
	for _, path := range []string{protocol.PathHealthz, protocol.PathReadyz} {
		resp, err := c.Get(f.issuerURL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s = %d", path, resp.StatusCode)
		}
	}
	if err := f.server.Ready(); err != nil {
		t.Fatal(err)
	}
	// A server whose JWT bundle lacks its own trust domain is not ready.
	g := newFixture(t, func(c *exchange.Config) { c.JWTBundles = testca.New(t, "elsewhere.example").Bundle() })
	if err := g.server.Ready(); err == nil {
		t.Fatal("ready without the trust domain's JWT bundle")
	}
}

func TestPolicyReload(t *testing.T) {
	f := newFixture(t, nil)
	c := f.client(f.svid(t, workloadID))
	form := url.Values{"grant_type": {"client_credentials"}, "audience": {apiAud}}.Encode()
	if resp := f.post(t, c, formType, form); resp.status != 200 {
		t.Fatalf("before reload: %d %v", resp.status, resp.body)
	}
	denyAll, err := stsid.NewPolicy(nil)
	if err != nil {
		t.Fatal(err)
	}
	f.server.SetPolicy(denyAll)
	if resp := f.post(t, c, formType, form); resp.body["error"] != "unauthorized_client" {
		t.Fatalf("after reload: %d %v", resp.status, resp.body)
	}
}

func TestNewValidation(t *testing.T) {
	f := newFixture(t, nil)
	td := spiffeid.RequireTrustDomainFromString("example.org")
	base := func() exchange.Config {
		p, _ := stsid.NewPolicy(nil)
		return exchange.Config{IssuerURL: "https://sts.example.org", TrustDomain: td, SVIDs: f.stsSVID,
			X509Bundles: f.ca.Bundle(), JWTBundles: f.ca.Bundle(), Policy: p, Minter: f.iss, Keys: f.iss.KeySet()}
	}
	tests := []struct {
		name           string
		overrideConfig func(*exchange.Config)
		expectErr      string
	}{
		{name: "baseline"},
		{name: "no issuer", overrideConfig: func(c *exchange.Config) { c.IssuerURL = "" }, expectErr: `exchange: IssuerURL "" is required`},
		{name: "http issuer", overrideConfig: func(c *exchange.Config) { c.IssuerURL = "http://sts" }, expectErr: `exchange: IssuerURL "http://sts" must be an https URL`},
		{name: "issuer with path", overrideConfig: func(c *exchange.Config) { c.IssuerURL = "https://sts/x" }, expectErr: `exchange: IssuerURL "https://sts/x" must not have a path`},
		{name: "issuer with slash", overrideConfig: func(c *exchange.Config) { c.IssuerURL = "https://sts/" }, expectErr: `exchange: IssuerURL "https://sts/" must not end in a slash`},
		{name: "issuer with query", overrideConfig: func(c *exchange.Config) { c.IssuerURL = "https://sts?a=b" }, expectErr: `exchange: IssuerURL "https://sts?a=b" must not have user info, a query or a fragment`},
		{name: "no trust domain", overrideConfig: func(c *exchange.Config) { c.TrustDomain = spiffeid.TrustDomain{} }, expectErr: "exchange: TrustDomain is required"},
		{name: "no policy", overrideConfig: func(c *exchange.Config) { c.Policy = nil }, expectErr: "exchange: Policy is required"},
		{name: "no minter", overrideConfig: func(c *exchange.Config) { c.Minter = nil }, expectErr: "exchange: Minter and Keys are required"},
		{name: "no sources", overrideConfig: func(c *exchange.Config) { c.JWTBundles = nil }, expectErr: "exchange: SVIDs, X509Bundles and JWTBundles are required"},
		{name: "negative body limit", overrideConfig: func(c *exchange.Config) { c.MaxBodyBytes = -1 }, expectErr: "exchange: MaxBodyBytes must not be negative"},
		{name: "negative in-flight cap", overrideConfig: func(c *exchange.Config) { c.MaxInFlight = -1 }, expectErr: "exchange: MaxInFlight must not be negative"},
		{name: "negative timeout", overrideConfig: func(c *exchange.Config) { c.IdleTimeout = -time.Second }, expectErr: "exchange: server timeouts must not be negative"},
		{name: "TLS 1.1", overrideConfig: func(c *exchange.Config) { c.TLSMinVersion = tls.VersionTLS11 }, expectErr: "exchange: TLSMinVersion must be TLS 1.2 or 1.3"},
		{name: "default rate limit without burst", overrideConfig: func(c *exchange.Config) { c.DefaultRateLimit = &stsid.RateLimit{PerSecond: 1} }, expectErr: "exchange: DefaultRateLimit: burst must be at least 1, got 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := base()
			if tt.overrideConfig != nil {
				tt.overrideConfig(&cfg)
			}
			_, err := exchange.New(cfg)
			if tt.expectErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || err.Error() != tt.expectErr {
				t.Fatalf("err = %v, want %s", err, tt.expectErr)
			}
		})
	}
}

// TestHTTPServerSettings checks that HTTPServer takes its timeouts and
// TLS minimum version from the Config, with the defaults when unset.
func TestHTTPServerSettings(t *testing.T) {
	f := newFixture(t, nil)
	srv := f.server.HTTPServer(f.stsSVID)
	if srv.ReadHeaderTimeout != exchange.DefaultReadHeaderTimeout || srv.ReadTimeout != exchange.DefaultReadTimeout ||
		srv.WriteTimeout != exchange.DefaultWriteTimeout || srv.IdleTimeout != exchange.DefaultIdleTimeout || srv.TLSConfig.MinVersion != tls.VersionTLS12 {
		t.Errorf("defaults: timeouts %v %v %v %v, TLS min %x", srv.ReadHeaderTimeout, srv.ReadTimeout, srv.WriteTimeout, srv.IdleTimeout, srv.TLSConfig.MinVersion)
	}
	f = newFixture(t, func(c *exchange.Config) {
		c.ReadHeaderTimeout, c.ReadTimeout, c.WriteTimeout, c.IdleTimeout = time.Second, 2*time.Second, 3*time.Second, 4*time.Second
		c.TLSMinVersion = tls.VersionTLS13
	})
	srv = f.server.HTTPServer(f.stsSVID)
	if srv.ReadHeaderTimeout != time.Second || srv.ReadTimeout != 2*time.Second || srv.WriteTimeout != 3*time.Second ||
		srv.IdleTimeout != 4*time.Second || srv.TLSConfig.MinVersion != tls.VersionTLS13 {
		t.Errorf("set: timeouts %v %v %v %v, TLS min %x", srv.ReadHeaderTimeout, srv.ReadTimeout, srv.WriteTimeout, srv.IdleTimeout, srv.TLSConfig.MinVersion)
	}
	// The running listener refuses TLS 1.2.
	c := f.client(f.svid(t, workloadID))
	c.Transport.(*http.Transport).TLSClientConfig.MaxVersion = tls.VersionTLS12
	if resp, err := c.Get(f.issuerURL + protocol.PathJWKS); err == nil {
		_ = resp.Body.Close()
		t.Error("a TLS 1.2 client connected to a server with TLSMinVersion 1.3")
	}
}

func toJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
