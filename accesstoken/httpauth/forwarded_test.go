package httpauth_test

import (
	"context"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/accesstoken/httpauth"
	"github.com/spiffe-sts/spiffe-sts/internal/forwardedtest"
	"github.com/spiffe-sts/spiffe-sts/internal/ststest"
	stsid "github.com/spiffe-sts/spiffe-sts/spiffeid"
	"github.com/spiffe-sts/spiffe-sts/spiffeid/forwarded"
)

const proxyID = "spiffe://example.org/ns/edge/sa/envoy"

// xfccFor is the element a proxy appends for the client certificate c,
// as Envoy writes it (SANITIZE_SET, cert and URI).
func xfccFor(c *x509.Certificate) string { return forwardedtest.XFCC(proxyID, c) }

// TestMiddlewareWithTrustedProxies runs the middleware over real mTLS with
// a fake proxy hop: the caller's connection presents Hop, and the request
// carries the certificate of Forward in x-forwarded-client-cert.
func TestMiddlewareWithTrustedProxies(t *testing.T) {
	s := ststest.Start(t, nil)
	client := s.WorkloadSVID(t, ststest.WorkloadID)
	proxy := s.WorkloadSVID(t, proxyID)
	thief := s.WorkloadSVID(t, otherPeer)
	evil := s.Evil.SVID(t, "spiffe://evil.example/ns/prod/sa/web", time.Hour)

	type params struct {
		// Hop is the SVID of the connection, Forward the one whose
		// certificate the header carries (nil: no header), BoundTo the
		// one the token is bound to.
		Hop, Forward, BoundTo *x509svid.SVID
		Header                func(r *http.Request)
	}
	baseline := func() params { return params{Hop: proxy, Forward: client, BoundTo: client} }
	const invalidToken = `Bearer error="invalid_token", error_description=`
	tests := []struct {
		name            string
		noOption        bool
		overrideParams  func(*params)
		expectStatus    int
		expectChallenge string
	}{
		{name: "trusted proxy forwards the client's certificate", expectStatus: http.StatusOK},
		{name: "binding checked against the forwarded certificate, not the proxy's",
			overrideParams: func(p *params) { p.BoundTo = proxy },
			expectStatus:   http.StatusUnauthorized, expectChallenge: invalidToken + `"the token is not bound to the client certificate", refusal="binding_mismatch"`},
		{name: "a thief's certificate forwarded with the client's token",
			overrideParams: func(p *params) { p.Forward = thief },
			expectStatus:   http.StatusUnauthorized, expectChallenge: invalidToken + `"the token is not bound to the client certificate", refusal="binding_mismatch"`},
		{name: "untrusted hop with the header is never served as the hop",
			overrideParams: func(p *params) { p.Hop, p.BoundTo = thief, thief },
			expectStatus:   http.StatusUnauthorized, expectChallenge: invalidToken + `"a forwarded client certificate is accepted only from a trusted proxy", refusal="bad_token"`},
		{name: "untrusted hop forging the client's certificate",
			overrideParams: func(p *params) { p.Hop = thief },
			expectStatus:   http.StatusUnauthorized, expectChallenge: invalidToken + `"a forwarded client certificate is accepted only from a trusted proxy", refusal="bad_token"`},
		{name: "trusted proxy that forwarded nothing is not the client",
			overrideParams: func(p *params) { p.Forward, p.BoundTo = nil, proxy },
			expectStatus:   http.StatusUnauthorized, expectChallenge: invalidToken + `"the proxy forwarded no client certificate", refusal="bad_token"`},
		{name: "direct client without a header", overrideParams: func(p *params) { p.Hop, p.Forward = client, nil },
			expectStatus: http.StatusOK},
		{name: "forwarded certificate of an untrusted trust domain", overrideParams: func(p *params) { p.Forward = evil },
			expectStatus: http.StatusUnauthorized, expectChallenge: invalidToken + `"the forwarded client certificate is not a valid X509-SVID", refusal="bad_token"`},
		{name: "header sent twice", overrideParams: func(p *params) {
			p.Header = func(r *http.Request) { r.Header.Add(forwarded.HeaderXFCC, xfccFor(thief.Certificates[0])) }
		}, expectStatus: http.StatusUnauthorized, expectChallenge: invalidToken + `"the forwarded client certificate header is invalid", refusal="bad_token"`},
		{name: "header of the other format", overrideParams: func(p *params) {
			p.Header = func(r *http.Request) { r.Header.Set(forwarded.HeaderClientCert, ":AAAA:") }
		}, expectStatus: http.StatusUnauthorized, expectChallenge: invalidToken + `"the forwarded client certificate header is invalid", refusal="bad_token"`},
		{name: "without the option the header is ignored", noOption: true,
			overrideParams: func(p *params) { p.Hop, p.BoundTo, p.Forward = thief, thief, client },
			expectStatus:   http.StatusOK},
		{name: "without the option a proxy's forward does not count", noOption: true,
			expectStatus: http.StatusUnauthorized, expectChallenge: invalidToken + `"the token is not bound to the client certificate", refusal="binding_mismatch"`},
	}
	policy := forwardedtest.Policy(t, s.CA.Bundle(), "spiffe://example.org/ns/edge/sa/*")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := baseline()
			if tt.overrideParams != nil {
				tt.overrideParams(&p)
			}
			opts := []httpauth.Option{httpauth.WithScopes("read"), httpauth.WithTrustedProxies(policy)}
			if tt.noOption {
				opts = opts[:1]
			}
			var seen *accesstoken.Claims
			handler := httpauth.Middleware(s.Verifier(ststest.APIAudience), opts...)(
				http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					seen, _ = accesstoken.FromContext(r.Context())
				}))
			url, clientFor := startServer(t, s, handler)
			call := ststest.NewBearerCall(p.BoundTo, "read")
			token := s.Mint(t, call.Claims, p.BoundTo)
			req, err := http.NewRequest(http.MethodGet, url+"/orders", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+token)
			if p.Forward != nil {
				req.Header.Set(forwarded.HeaderXFCC, xfccFor(p.Forward.Certificates[0]))
			}
			if p.Header != nil {
				p.Header(req)
			}
			resp, err := clientFor(p.Hop).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.expectStatus {
				t.Fatalf("status = %d, want %d (%s, %s)", resp.StatusCode, tt.expectStatus, body, resp.Header.Get("WWW-Authenticate"))
			}
			if got := resp.Header.Get("WWW-Authenticate"); got != tt.expectChallenge {
				t.Fatalf("WWW-Authenticate = %s, want %s", got, tt.expectChallenge)
			}
			if (seen != nil) != (tt.expectStatus == http.StatusOK) {
				t.Fatalf("handler saw %+v", seen)
			}
		})
	}
}

// TestMiddlewareWithTrustedUnixSocket serves a sidecar on a Unix socket:
// the hop has no certificate, and the header is believed only when the
// operator opted into the socket.
func TestMiddlewareWithTrustedUnixSocket(t *testing.T) {
	s := ststest.Start(t, nil)
	client := s.WorkloadSVID(t, ststest.WorkloadID)
	token := s.Mint(t, ststest.NewBearerCall(client, "read").Claims, client)
	for _, tt := range []struct {
		name            string
		trustSocket     bool
		network         string
		expectStatus    int
		expectChallenge string
	}{
		{name: "trusted socket", trustSocket: true, network: "unix", expectStatus: http.StatusOK},
		{name: "socket not opted into", network: "unix", expectStatus: http.StatusUnauthorized,
			expectChallenge: `Bearer error="invalid_token", error_description="a forwarded client certificate is accepted only from a trusted proxy", refusal="bad_token"`},
		{name: "plain TCP is no socket", trustSocket: true, network: "tcp", expectStatus: http.StatusUnauthorized,
			expectChallenge: `Bearer error="invalid_token", error_description="a forwarded client certificate is accepted only from a trusted proxy", refusal="bad_token"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := forwarded.Config{Format: forwarded.FormatXFCC, Bundles: s.CA.Bundle(), TrustUnixSocket: tt.trustSocket}
			if !tt.trustSocket {
				cfg.TrustedProxies = []stsid.Pattern{stsid.RequirePattern(proxyID)}
			}
			policy, err := forwarded.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			handler := httpauth.Middleware(s.Verifier(ststest.APIAudience), httpauth.WithTrustedProxies(policy))(
				http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
			var addr net.Addr = &net.UnixAddr{Name: "/run/app.sock", Net: "unix"}
			if tt.network == "tcp" {
				addr = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080}
			}
			r := httptest.NewRequest(http.MethodGet, "http://localhost/orders", nil)
			r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, addr))
			r.Header.Set("Authorization", "Bearer "+token)
			r.Header.Set(forwarded.HeaderXFCC, xfccFor(client.Certificates[0]))
			w := httptest.NewRecorder()
			handler.ServeHTTP(w, r)
			if w.Code != tt.expectStatus || w.Header().Get("WWW-Authenticate") != tt.expectChallenge {
				t.Fatalf("got %d %s, want %d %s", w.Code, w.Header().Get("WWW-Authenticate"), tt.expectStatus, tt.expectChallenge)
			}
		})
	}
}

func TestWithTrustedProxiesRejectsNil(t *testing.T) {
	defer func() {
		if r := recover(); r != "httpauth: nil trusted-proxy policy" {
			t.Fatalf("recovered %v", r)
		}
	}()
	httpauth.WithTrustedProxies(nil)
}
