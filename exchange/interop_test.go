package exchange_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/sts"

	"github.com/spiffe-sts/spiffe-sts/exchange"
	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
	"github.com/spiffe-sts/spiffe-sts/internal/ststest"
	stsid "github.com/spiffe-sts/spiffe-sts/spiffeid"
)

// TestOAuth2ClientCredentials uses golang.org/x/oauth2/clientcredentials
// the ordinary way: the client ID is the SPIFFE ID, sent in the form
// (AuthStyleInParams, no secret), and the mTLS client goes in the context
// with oauth2.HTTPClient.
func TestOAuth2ClientCredentials(t *testing.T) {
	f := newFixture(t, nil)

	type expected struct {
		scope      string // the token's scope claim
		extraScope any    // the response's scope member
		status     int
		code       string
		desc       string
	}
	tests := []struct {
		name             string
		svid             func(t *testing.T) *x509svid.SVID // nil: no client certificate
		overrideConfig   func(*clientcredentials.Config)
		overrideExpected func(*expected)
	}{
		{name: "baseline: audience and scopes"},
		{
			name:             "default scope",
			overrideConfig:   func(c *clientcredentials.Config) { c.Scopes = nil },
			overrideExpected: func(e *expected) { e.scope, e.extraScope = "read", "read" },
		},
		{
			name:             "scope narrowed",
			overrideConfig:   func(c *clientcredentials.Config) { c.Scopes = []string{"read", "delete"} },
			overrideExpected: func(e *expected) { e.scope, e.extraScope = "read", "read" },
		},
		{
			name: "resource as an endpoint parameter",
			overrideConfig: func(c *clientcredentials.Config) {
				c.EndpointParams = url.Values{"resource": {ststest.OrdersResource}}
			},
		},
		{
			name: "audience not allowed",
			overrideConfig: func(c *clientcredentials.Config) {
				c.EndpointParams = url.Values{"audience": {"spiffe://example.org/db"}}
			},
			overrideExpected: func(e *expected) {
				e.status, e.code, e.desc = 400, "invalid_target", `audience "spiffe://example.org/db" is not allowed for this client`
			},
		},
		{
			name:           "client ID of someone else",
			overrideConfig: func(c *clientcredentials.Config) { c.ClientID = otherID },
			overrideExpected: func(e *expected) {
				e.status, e.code, e.desc = 401, "invalid_client", "client_id does not match the client certificate's SPIFFE ID"
			},
		},
		{
			name:           "a client secret as well",
			overrideConfig: func(c *clientcredentials.Config) { c.ClientSecret = "s3cret" },
			overrideExpected: func(e *expected) {
				e.status, e.code, e.desc = 400, "invalid_request", "authenticate with the X509-SVID (tls_client_auth) only"
			},
		},
		{
			name: "no client certificate",
			svid: func(*testing.T) *x509svid.SVID { return nil },
			overrideExpected: func(e *expected) {
				e.status, e.code, e.desc = 401, "invalid_client", "a client certificate (X509-SVID) is required"
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svid := f.svid(t, workloadID)
			if tt.svid != nil {
				svid = tt.svid(t)
			}
			cfg := clientcredentials.Config{
				ClientID:       workloadID,
				TokenURL:       f.issuerURL + protocol.PathToken,
				Scopes:         []string{"read", "write"},
				EndpointParams: url.Values{"audience": {apiAud}},
				AuthStyle:      oauth2.AuthStyleInParams,
			}
			want := expected{scope: "read write", extraScope: nil}
			if tt.overrideConfig != nil {
				tt.overrideConfig(&cfg)
			}
			if tt.overrideExpected != nil {
				tt.overrideExpected(&want)
			}

			ctx := context.WithValue(context.Background(), oauth2.HTTPClient, f.client(svid))
			tok, err := cfg.Token(ctx)
			if want.code != "" {
				var re *oauth2.RetrieveError
				if !errors.As(err, &re) {
					t.Fatalf("Token error = %v, want an *oauth2.RetrieveError", err)
				}
				if re.ErrorCode != want.code || re.ErrorDescription != want.desc || re.Response.StatusCode != want.status {
					t.Errorf("RetrieveError = %d %q %q, want %d %q %q",
						re.Response.StatusCode, re.ErrorCode, re.ErrorDescription, want.status, want.code, want.desc)
				}
				return
			}
			if err != nil {
				t.Fatalf("Token: %v", err)
			}
			if tok.Type() != "Bearer" || !tok.Valid() {
				t.Errorf("token type %q, valid %v", tok.Type(), tok.Valid())
			}
			if until := time.Until(tok.Expiry); until < 4*time.Minute || until > 5*time.Minute {
				t.Errorf("Expiry in %v, want about 5m", until)
			}
			if got := tok.Extra("scope"); got != want.extraScope {
				t.Errorf("response scope = %v, want %v", got, want.extraScope)
			}
			aud := apiAud
			if r := cfg.EndpointParams.Get("resource"); r != "" {
				aud = r
			}
			claims, err := f.verifier(aud).Verify(ctx, tok.AccessToken, svid.Certificates[0])
			if err != nil {
				t.Fatalf("the token does not verify bound to the client's certificate: %v", err)
			}
			if claims.Subject != workloadID || claims.ClientID != workloadID || claims.Scope != want.scope {
				t.Errorf("sub, client_id, scope = %q, %q, %q", claims.Subject, claims.ClientID, claims.Scope)
			}
			if _, err := f.verifier(aud).Verify(ctx, tok.AccessToken, f.svid(t, otherID).Certificates[0]); err == nil {
				t.Error("the token verifies with another workload's certificate")
			}
		})
	}
}

// upstream records what the sidecar proxy got from the STS.
type upstream struct {
	mu          sync.Mutex
	requests    int
	contentType string
	status      int
	body        []byte
}

// mtlsSidecar is a plain-HTTP loopback proxy to the STS that originates
// mTLS with svid (none when nil), as a sidecar next to a workload would.
// gRPC-Go's credentials/sts cannot present a client certificate itself.
func mtlsSidecar(t *testing.T, f *fixture, svid *x509svid.SVID) (string, *upstream) {
	t.Helper()
	target, err := url.Parse(f.issuerURL)
	if err != nil {
		t.Fatal(err)
	}
	rec := new(upstream)
	transport := &http.Transport{TLSClientConfig: f.TLSConfig(svid), ForceAttemptHTTP2: true}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(target)
			rec.mu.Lock()
			rec.requests++
			rec.contentType = r.In.Header.Get("Content-Type")
			rec.mu.Unlock()
		},
		Transport: transport,
		ModifyResponse: func(resp *http.Response) error {
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				return err
			}
			resp.Body = io.NopCloser(strings.NewReader(string(body)))
			rec.mu.Lock()
			rec.status, rec.body = resp.StatusCode, body
			rec.mu.Unlock()
			return nil
		},
	}
	srv := httptest.NewServer(proxy)
	t.Cleanup(srv.Close)
	t.Cleanup(transport.CloseIdleConnections)
	return srv.URL, rec
}

// TestGRPCCredentialsSTS checks wire compatibility with gRPC-Go's
// credentials/sts, which sends the RFC 8693 request as JSON. It builds
// its own http.Client with the system roots and no client certificate,
// so it cannot authenticate to spiffe-sts by itself: it is pointed at an
// http:// loopback sidecar that originates mTLS with the workload's
// X509-SVID, and the token comes back bound to that certificate.
func TestGRPCCredentialsSTS(t *testing.T) {
	type config struct {
		options   sts.Options
		sidecar   bool // through the mTLS sidecar; else straight to the STS over https
		sidecarID string
		policyTTL time.Duration // 0: the default policy (5 minutes)
		calls     int
	}
	type expected struct {
		ok       bool
		requests int // token requests the sidecar forwarded
		status   int // the STS's answer to the last one
		code     string
		desc     string
	}
	tests := []struct {
		name             string
		overrideConfig   func(*config)
		overrideExpected func(*expected)
	}{
		{name: "baseline: through the mTLS sidecar"},
		{
			name:           "resource in place of audience",
			overrideConfig: func(c *config) { c.options.Audience, c.options.Resource = "", ststest.OrdersResource },
		},
		{
			// credentials/sts reuses a token only while more than five
			// minutes of it are left: 5-minute tokens are exchanged per call.
			name:             "tokens of at most 5 minutes are not cached",
			overrideConfig:   func(c *config) { c.calls = 2 },
			overrideExpected: func(e *expected) { e.requests = 2 },
		},
		{
			name:           "tokens of 10 minutes are cached",
			overrideConfig: func(c *config) { c.calls, c.policyTTL = 2, 10*time.Minute },
		},
		{
			// Without Scope, credentials/sts asks for Google's
			// cloud-platform scope, which no policy here grants.
			name:           "no scope set",
			overrideConfig: func(c *config) { c.options.Scope = "" },
			overrideExpected: func(e *expected) {
				e.ok, e.status, e.code, e.desc = false, 400, "invalid_scope", "none of the requested scopes is allowed for this client"
			},
		},
		{
			name:           "audience not allowed",
			overrideConfig: func(c *config) { c.options.Audience = "spiffe://example.org/db" },
			overrideExpected: func(e *expected) {
				e.ok, e.status, e.code, e.desc = false, 400, "invalid_target", `audience "spiffe://example.org/db" is not allowed for this client`
			},
		},
		{
			name:           "sidecar without a client certificate",
			overrideConfig: func(c *config) { c.sidecarID = "-" },
			overrideExpected: func(e *expected) {
				e.ok, e.status, e.code, e.desc = false, 401, "invalid_client", "a client certificate (X509-SVID) is required"
			},
		},
		{
			// The JWT-SVID proves the workload, but only the certificate
			// authenticates the client: the sidecar's certificate is not the
			// workload's, and the STS refuses the JWT-SVID of someone else.
			name:           "sidecar presenting another workload's SVID",
			overrideConfig: func(c *config) { c.sidecarID = otherID },
			overrideExpected: func(e *expected) {
				e.ok, e.status, e.code, e.desc = false, 400, "invalid_grant", "the subject token was neither issued nor sent to this client"
			},
		},
		{
			// Straight to the STS it fails closed: the system roots do not
			// verify the STS's X509-SVID, and even if they did the request
			// would carry no client certificate (invalid_client).
			name:           "direct https, no sidecar",
			overrideConfig: func(c *config) { c.sidecar = false },
			overrideExpected: func(e *expected) {
				e.ok, e.requests, e.status = false, 0, 0
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := config{
				options: sts.Options{
					Audience:         apiAud,
					Scope:            "read",
					SubjectTokenType: string(protocol.TokenTypeJWT),
				},
				sidecar:   true,
				sidecarID: workloadID,
				calls:     1,
			}
			want := expected{ok: true, requests: 1, status: 200}
			if tt.overrideConfig != nil {
				tt.overrideConfig(&cfg)
			}
			if tt.overrideExpected != nil {
				tt.overrideExpected(&want)
			}
			f := newFixture(t, func(c *exchange.Config) {
				if cfg.policyTTL == 0 {
					return
				}
				policy, err := stsid.NewPolicy([]stsid.Rule{{
					Pattern:       stsid.RequirePattern("spiffe://example.org/ns/prod/sa/*"),
					Audiences:     []string{ststest.APIAudience, ststest.OrdersResource},
					Scopes:        []string{"read"},
					DefaultScopes: []string{"read"},
					MaxTTL:        cfg.policyTTL,
				}})
				if err != nil {
					t.Fatal(err)
				}
				c.Policy = policy
			})
			workload := f.svid(t, workloadID)

			// The JWT-SVID file, as a SPIFFE helper would write it: the
			// token alone, with no trailing newline.
			cfg.options.SubjectTokenPath = filepath.Join(t.TempDir(), "jwt-svid")
			if err := os.WriteFile(cfg.options.SubjectTokenPath, []byte(f.jwtSVID(t, workloadID)), 0o600); err != nil {
				t.Fatal(err)
			}
			var sidecarSVID *x509svid.SVID
			if cfg.sidecarID != "-" {
				sidecarSVID = f.svid(t, cfg.sidecarID)
			}
			sidecarURL, rec := mtlsSidecar(t, f, sidecarSVID)
			if cfg.sidecar {
				cfg.options.TokenExchangeServiceURI = sidecarURL + protocol.PathToken
			} else {
				cfg.options.TokenExchangeServiceURI = f.issuerURL + protocol.PathToken
			}

			creds, err := sts.NewCredentials(cfg.options)
			if err != nil {
				t.Fatalf("sts.NewCredentials: %v", err)
			}
			// The connection the call would go on: credentials/sts requires
			// privacy and integrity.
			ctx := credentials.NewContextWithRequestInfo(context.Background(), credentials.RequestInfo{
				AuthInfo: credentials.TLSInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity}},
			})
			var md map[string]string
			for range cfg.calls {
				if md, err = creds.GetRequestMetadata(ctx); err != nil {
					break
				}
			}

			rec.mu.Lock()
			defer rec.mu.Unlock()
			if rec.requests != want.requests || rec.status != want.status {
				t.Fatalf("the sidecar forwarded %d requests, last answered %d; want %d, %d; body %s",
					rec.requests, rec.status, want.requests, want.status, rec.body)
			}
			if rec.requests > 0 && rec.contentType != "application/json" {
				t.Errorf("credentials/sts sent Content-Type %q, want application/json", rec.contentType)
			}
			if !want.ok {
				if err == nil {
					t.Fatalf("GetRequestMetadata = %v, want an error", md)
				}
				if want.code != "" {
					var body protocol.Error
					if json.Unmarshal(rec.body, &body) != nil || body != (protocol.Error{Code: want.code, Description: want.desc}) {
						t.Errorf("STS answered %s, want %s: %s", rec.body, want.code, want.desc)
					}
				}
				if !cfg.sidecar {
					// Refused by the client's own TLS verification: the
					// request never reached the STS.
					var verr *tls.CertificateVerificationError
					if !errors.As(err, &verr) {
						t.Errorf("GetRequestMetadata error = %v, want a *tls.CertificateVerificationError", err)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("GetRequestMetadata: %v", err)
			}
			raw, ok := strings.CutPrefix(md["Authorization"], "Bearer ")
			if !ok {
				t.Fatalf("metadata = %v, want Authorization: Bearer", md)
			}
			aud := cfg.options.Audience
			if aud == "" {
				aud = cfg.options.Resource
			}
			claims, err := f.verifier(aud).Verify(ctx, raw, workload.Certificates[0])
			if err != nil {
				t.Fatalf("the token does not verify bound to the workload's certificate: %v", err)
			}
			if claims.Subject != workloadID || claims.ClientID != workloadID || claims.Scope != "read" {
				t.Errorf("sub, client_id, scope = %q, %q, %q", claims.Subject, claims.ClientID, claims.Scope)
			}
		})
	}
}
