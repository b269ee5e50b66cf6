package httpauth_test

import (
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/accesstoken/httpauth"
	"github.com/spiffe-sts/spiffe-sts/internal/ststest"
)

const (
	apiID     = "spiffe://example.org/ns/prod/sa/api"
	otherPeer = "spiffe://example.org/ns/prod/sa/other"
)

// startServer serves handler behind the middleware over TLS requiring
// client certificates from the test CA, and returns its URL and a client
// factory.
func startServer(t *testing.T, s *ststest.STS, handler http.Handler) (url string, client func(*x509svid.SVID) *http.Client) {
	t.Helper()
	serverSVID := s.WorkloadSVID(t, apiID)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler:           handler,
		TLSConfig:         tlsconfig.MTLSServerConfig(serverSVID, s.CA.Bundle(), tlsconfig.AuthorizeMemberOf(s.CA.TrustDomain)),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })
	return "https://" + ln.Addr().String(), func(svid *x509svid.SVID) *http.Client {
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig: tlsconfig.MTLSClientConfig(svid, s.CA.Bundle(), tlsconfig.AuthorizeID(serverSVID.ID)),
		}}
	}
}

func TestMiddleware(t *testing.T) {
	s := ststest.Start(t, nil)
	caller := s.WorkloadSVID(t, ststest.WorkloadID)
	other := s.WorkloadSVID(t, otherPeer)
	sameIDOtherKey := s.CA.SVID(t, ststest.WorkloadID, time.Hour)

	baseline := func() ststest.BearerCall { return ststest.NewBearerCall(caller, "read write") }
	const invalidToken = `Bearer error="invalid_token", error_description=`
	tests := []struct {
		name            string
		overrideParams  func(*ststest.BearerCall)
		overrideConfig  func(*accesstoken.Config)
		expectStatus    int
		expectChallenge string
	}{
		{name: "baseline", expectStatus: http.StatusOK},
		{name: "scheme is case-insensitive", overrideParams: func(p *ststest.BearerCall) { p.Header = func(tok string) string { return "bearer " + tok } },
			expectStatus: http.StatusOK},
		{name: "missing token", overrideParams: func(p *ststest.BearerCall) { p.Header = func(string) string { return "" } },
			expectStatus: http.StatusUnauthorized, expectChallenge: "Bearer"},
		{name: "another scheme", overrideParams: func(p *ststest.BearerCall) { p.Header = func(string) string { return "Basic dXNlcjpwYXNz" } },
			expectStatus: http.StatusUnauthorized, expectChallenge: "Bearer"},
		{name: "bearer without token", overrideParams: func(p *ststest.BearerCall) { p.Header = func(string) string { return "Bearer" } },
			expectStatus: http.StatusUnauthorized, expectChallenge: invalidToken + `"the token is malformed", refusal="bad_token"`},
		{name: "bad token", overrideParams: func(p *ststest.BearerCall) { p.Header = func(string) string { return "Bearer not-a-jwt" } },
			expectStatus: http.StatusUnauthorized, expectChallenge: invalidToken + `"the token is malformed", refusal="bad_token"`},
		{name: "tampered token", overrideParams: func(p *ststest.BearerCall) {
			p.Header = func(tok string) string { return "Bearer " + tok[:len(tok)-4] + "AAAA" }
		},
			expectStatus: http.StatusUnauthorized, expectChallenge: invalidToken + `"the token signature does not verify", refusal="bad_token"`},
		{name: "bound to another certificate of the same ID", overrideParams: func(p *ststest.BearerCall) { p.BoundTo = sameIDOtherKey },
			expectStatus: http.StatusUnauthorized, expectChallenge: invalidToken + `"the token is not bound to the client certificate", refusal="binding_mismatch"`},
		{name: "replayed by another workload", overrideParams: func(p *ststest.BearerCall) { p.Client = other },
			expectStatus: http.StatusUnauthorized, expectChallenge: invalidToken + `"the token is not bound to the client certificate", refusal="binding_mismatch"`},
		{name: "wrong audience", overrideParams: func(p *ststest.BearerCall) { p.Claims.Audience = accesstoken.Audience{ststest.OrdersResource} },
			expectStatus: http.StatusUnauthorized, expectChallenge: invalidToken + `"the token is not for this resource server", refusal="bad_token"`},
		{name: "expired", overrideConfig: func(c *accesstoken.Config) { c.Now = func() time.Time { return time.Now().Add(time.Hour) } },
			expectStatus: http.StatusUnauthorized, expectChallenge: invalidToken + `"the token has expired", refusal="bad_token"`},
		{name: "missing scope", overrideParams: func(p *ststest.BearerCall) { p.Claims.Scope = "read" },
			expectStatus:    http.StatusForbidden,
			expectChallenge: `Bearer error="insufficient_scope", error_description="the token lacks a required scope", scope="read write"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := baseline()
			if tt.overrideParams != nil {
				tt.overrideParams(&p)
			}
			v := s.VerifierWith(ststest.APIAudience, tt.overrideConfig)
			var seen *accesstoken.Claims
			handler := httpauth.Middleware(v, httpauth.WithScopes("read"), httpauth.WithScopes("write"))(
				http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					seen, _ = accesstoken.FromContext(r.Context())
					_, _ = io.WriteString(w, "ok")
				}))
			url, client := startServer(t, s, handler)
			token := s.Mint(t, p.Claims, p.BoundTo)
			req, err := http.NewRequest(http.MethodGet, url+"/orders", nil)
			if err != nil {
				t.Fatal(err)
			}
			if h := p.Header(token); h != "" {
				req.Header.Set("Authorization", h)
			}
			resp, err := client(p.Client).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.expectStatus {
				t.Fatalf("status = %d, want %d (%s)", resp.StatusCode, tt.expectStatus, body)
			}
			if got := resp.Header.Get("WWW-Authenticate"); got != tt.expectChallenge {
				t.Fatalf("WWW-Authenticate = %s, want %s", got, tt.expectChallenge)
			}
			if strings.Contains(string(body), token[:20]) || strings.Contains(resp.Header.Get("WWW-Authenticate"), token[:20]) {
				t.Fatal("the response echoes the token")
			}
			if tt.expectStatus != http.StatusOK {
				if seen != nil {
					t.Fatal("handler called")
				}
				return
			}
			if seen == nil || seen.Subject != ststest.WorkloadID || !seen.HasScope("write") {
				t.Fatalf("handler saw claims %+v", seen)
			}
		})
	}
}

// TestMiddlewareWithoutClientCertificate checks requests that reach the
// middleware without TLS or without a client certificate, as they would on
// a misconfigured server.
func TestMiddlewareWithoutClientCertificate(t *testing.T) {
	s := ststest.Start(t, nil)
	caller := s.WorkloadSVID(t, ststest.WorkloadID)
	claims := accesstoken.Claims{Subject: ststest.WorkloadID, ClientID: ststest.WorkloadID, Audience: accesstoken.Audience{ststest.APIAudience}}
	token := s.Mint(t, claims, caller)
	v := accesstoken.NewVerifier(s.URL, s.Issuer.KeySet(), &accesstoken.Config{Audiences: []string{ststest.APIAudience}})
	handler := httpauth.Middleware(v)(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { t.Fatal("handler called") }))
	tests := []struct {
		name       string
		overrideTS func(*http.Request)
	}{
		{name: "no TLS", overrideTS: func(r *http.Request) { r.TLS = nil }},
		{name: "no client certificate", overrideTS: func(r *http.Request) { r.TLS.PeerCertificates = nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "https://api.example.org/", nil)
			r.Header.Set("Authorization", "Bearer "+token)
			tt.overrideTS(r)
			w := httptest.NewRecorder()
			handler.ServeHTTP(w, r)
			want := `Bearer error="invalid_token", error_description="no client certificate", refusal="bad_token"`
			if w.Code != http.StatusUnauthorized || w.Header().Get("WWW-Authenticate") != want {
				t.Fatalf("got %d %s, want 401 %s", w.Code, w.Header().Get("WWW-Authenticate"), want)
			}
		})
	}
}

func TestWithScopesRejectsInvalidScope(t *testing.T) {
	defer func() {
		if r := recover(); r != `httpauth: invalid scope "a b"` {
			t.Fatalf("recovered %v", r)
		}
	}()
	httpauth.WithScopes("a b")
}
