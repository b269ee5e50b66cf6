package extauthz_test

import (
	"context"
	"encoding/pem"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/accesstoken/extauthz"
	"github.com/spiffe-sts/spiffe-sts/internal/ststest"
)

const (
	otherID = "spiffe://example.org/ns/prod/sa/other"
	actorID = "spiffe://example.org/ns/prod/sa/frontend"
)

// startService serves srv on a bufconn listener and returns a client.
func startService(t *testing.T, srv *extauthz.Server) authv3.AuthorizationClient {
	t.Helper()
	ln := bufconn.Listen(1 << 20)
	g := grpc.NewServer()
	srv.Register(g)
	go func() { _ = g.Serve(ln) }()
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return ln.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return authv3.NewAuthorizationClient(conn)
}

// envoyCert is attributes.source.certificate as Envoy fills it: the
// URL-encoded PEM of the downstream leaf.
func envoyCert(svid *x509svid.SVID) string {
	return pemEscape(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: svid.Certificates[0].Raw}))
}

// pemEscape percent-encodes as Envoy does, a space as %20.
func pemEscape(p []byte) string { return strings.ReplaceAll(url.QueryEscape(string(p)), "+", "%20") }

// checkRequest is the CheckRequest Envoy sends for GET /orders with
// include_peer_certificate.
func checkRequest(peer *x509svid.SVID, headers map[string]string) *authv3.CheckRequest {
	src := &authv3.AttributeContext_Peer{
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: "10.0.0.7", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 51234}}}},
	}
	if peer != nil {
		src.Principal = peer.ID.String()
		src.Certificate = envoyCert(peer)
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: src,
		Destination: &authv3.AttributeContext_Peer{
			Principal: "spiffe://example.org/ns/prod/sa/orders",
		},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: "1", Method: "GET", Path: "/orders", Host: "orders.example.org", Scheme: "https", Protocol: "HTTP/2",
			Headers: headers,
		}},
	}}
}

type result struct {
	code      codes.Code
	status    typev3.StatusCode // of a denial
	challenge string
	set       map[string]string
	removed   []string
}

func summarize(t *testing.T, resp *authv3.CheckResponse) result {
	t.Helper()
	r := result{code: codes.Code(resp.GetStatus().GetCode()), set: map[string]string{}}
	if d := resp.GetDeniedResponse(); d != nil {
		r.status = d.GetStatus().GetCode()
		for _, h := range d.GetHeaders() {
			if h.GetHeader().GetKey() == "www-authenticate" {
				r.challenge = h.GetHeader().GetValue()
			}
		}
		return r
	}
	for _, h := range resp.GetOkResponse().GetHeaders() {
		if h.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
			t.Fatalf("header %s appended, not overwritten", h.GetHeader().GetKey())
		}
		r.set[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
	}
	r.removed = resp.GetOkResponse().GetHeadersToRemove()
	return r
}

func TestCheck(t *testing.T) {
	s := ststest.Start(t, nil)
	caller := s.WorkloadSVID(t, ststest.WorkloadID)
	other := s.WorkloadSVID(t, otherID)
	evil := s.Evil.SVID(t, "spiffe://evil.example/ns/prod/sa/web", time.Hour)

	type params struct {
		claims  accesstoken.Claims
		boundTo *x509svid.SVID
		peer    *x509svid.SVID // nil: Envoy passed no certificate
		// headers builds the request headers from the token.
		headers func(token string) map[string]string
		// edit changes the CheckRequest last.
		edit func(*authv3.CheckRequest, string)
	}
	baseline := func() params {
		call := ststest.NewBearerCall(caller, "read write")
		return params{claims: call.Claims, boundTo: caller, peer: caller, headers: func(tok string) map[string]string {
			return map[string]string{
				":authority": "orders.example.org", ":method": "GET", ":path": "/orders",
				"authorization":        "Bearer " + tok,
				"x-spiffe-sts-subject": "spiffe://example.org/ns/prod/sa/admin", // forged by the client
				"x-spiffe-sts-extra":   "forged",
			}
		}}
	}
	okHeaders := map[string]string{
		extauthz.HeaderSubject: ststest.WorkloadID, extauthz.HeaderClientID: ststest.WorkloadID, extauthz.HeaderScope: "read write",
	}
	const invalidToken = `Bearer error="invalid_token", error_description=`
	tests := []struct {
		name           string
		overrideParams func(*params)
		overrideConfig func(*accesstoken.Config)
		noScopes       bool // none required
		expect         result
	}{
		{name: "baseline", expect: result{code: codes.OK, set: okHeaders,
			removed: []string{extauthz.HeaderAct, "x-spiffe-sts-extra"}}},
		{name: "delegated: the act chain", overrideParams: func(p *params) {
			p.claims.Actor = &accesstoken.Actor{Subject: actorID, Actor: &accesstoken.Actor{Subject: otherID}}
		}, expect: result{code: codes.OK, set: map[string]string{
			extauthz.HeaderSubject: ststest.WorkloadID, extauthz.HeaderClientID: ststest.WorkloadID, extauthz.HeaderScope: "read write",
			extauthz.HeaderAct: `"` + actorID + `", "` + otherID + `"`,
		}, removed: []string{"x-spiffe-sts-extra"}}},
		{name: "no scope", overrideParams: func(p *params) { p.claims.Scope = "" }, noScopes: true,
			expect: result{code: codes.OK, set: map[string]string{extauthz.HeaderSubject: ststest.WorkloadID, extauthz.HeaderClientID: ststest.WorkloadID},
				removed: []string{extauthz.HeaderScope, extauthz.HeaderAct, "x-spiffe-sts-extra"}}},
		{name: "raw header map (encode_raw_headers)", overrideParams: func(p *params) {
			p.headers = func(string) map[string]string { return nil }
			p.edit = func(r *authv3.CheckRequest, tok string) {
				r.Attributes.Request.Http.HeaderMap = &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
					{Key: ":path", RawValue: []byte("/orders")}, {Key: "authorization", RawValue: []byte("Bearer " + tok)},
				}}
			}
		}, expect: result{code: codes.OK, set: okHeaders, removed: []string{extauthz.HeaderAct}}},

		{name: "no token", overrideParams: func(p *params) {
			p.headers = func(string) map[string]string { return map[string]string{":path": "/orders"} }
		}, expect: result{code: codes.Unauthenticated, status: typev3.StatusCode_Unauthorized, challenge: "Bearer"}},
		{name: "malformed token", overrideParams: func(p *params) {
			p.headers = func(string) map[string]string { return map[string]string{"authorization": "Bearer not a token"} }
		}, expect: result{code: codes.Unauthenticated, status: typev3.StatusCode_Unauthorized, challenge: invalidToken + `"the token is malformed", refusal="bad_token"`}},
		{name: "two authorization lines", overrideParams: func(p *params) {
			p.edit = func(r *authv3.CheckRequest, tok string) {
				r.Attributes.Request.Http.HeaderMap = &corev3.HeaderMap{Headers: []*corev3.HeaderValue{{Key: "Authorization", Value: "Bearer " + tok}}}
			}
		}, expect: result{code: codes.Unauthenticated, status: typev3.StatusCode_Unauthorized, challenge: invalidToken + `"the token is malformed", refusal="bad_token"`}},
		{name: "tampered signature", overrideParams: func(p *params) {
			base := p.headers
			p.headers = func(tok string) map[string]string { return base(tok[:len(tok)-4] + "AAAA") }
		}, expect: result{code: codes.Unauthenticated, status: typev3.StatusCode_Unauthorized, challenge: invalidToken + `"the token signature does not verify", refusal="bad_token"`}},
		{name: "bound to another certificate", overrideParams: func(p *params) { p.peer = other },
			expect: result{code: codes.Unauthenticated, status: typev3.StatusCode_Unauthorized, challenge: invalidToken + `"the token is not bound to the client certificate", refusal="binding_mismatch"`}},
		{name: "wrong audience", overrideParams: func(p *params) { p.claims.Audience = accesstoken.Audience{ststest.OrdersResource} },
			expect: result{code: codes.Unauthenticated, status: typev3.StatusCode_Unauthorized, challenge: invalidToken + `"the token is not for this resource server", refusal="bad_token"`}},
		{name: "expired", overrideConfig: func(c *accesstoken.Config) { c.Now = func() time.Time { return time.Now().Add(time.Hour) } },
			expect: result{code: codes.Unauthenticated, status: typev3.StatusCode_Unauthorized, challenge: invalidToken + `"the token has expired", refusal="bad_token"`}},
		{name: "no peer certificate (include_peer_certificate off)", overrideParams: func(p *params) { p.peer = nil },
			expect: result{code: codes.Unauthenticated, status: typev3.StatusCode_Unauthorized, challenge: invalidToken + `"no client certificate", refusal="bad_token"`}},
		{name: "peer certificate from an untrusted trust domain", overrideParams: func(p *params) { p.peer = evil },
			expect: result{code: codes.Unauthenticated, status: typev3.StatusCode_Unauthorized, challenge: invalidToken + `"the client certificate is not a valid X509-SVID", refusal="bad_token"`}},
		{name: "peer certificate garbled", overrideParams: func(p *params) {
			p.edit = func(r *authv3.CheckRequest, _ string) { r.Attributes.Source.Certificate = "%zz" }
		}, expect: result{code: codes.Unauthenticated, status: typev3.StatusCode_Unauthorized, challenge: invalidToken + `"the client certificate is not a valid X509-SVID", refusal="bad_token"`}},
		{name: "two peer certificates", overrideParams: func(p *params) {
			p.edit = func(r *authv3.CheckRequest, _ string) { r.Attributes.Source.Certificate += envoyCert(other) }
		}, expect: result{code: codes.Unauthenticated, status: typev3.StatusCode_Unauthorized, challenge: invalidToken + `"the client certificate is not a valid X509-SVID", refusal="bad_token"`}},
		{name: "CA certificate as peer", overrideParams: func(p *params) {
			p.edit = func(r *authv3.CheckRequest, _ string) {
				r.Attributes.Source.Certificate = pemEscape(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.CA.Cert.Raw}))
			}
		}, expect: result{code: codes.Unauthenticated, status: typev3.StatusCode_Unauthorized, challenge: invalidToken + `"the client certificate is not a valid X509-SVID", refusal="bad_token"`}},
		{name: "missing scope", overrideParams: func(p *params) { p.claims.Scope = "read" },
			expect: result{code: codes.PermissionDenied, status: typev3.StatusCode_Forbidden,
				challenge: `Bearer error="insufficient_scope", error_description="the token lacks a required scope", scope="read write"`}},
		{name: "subject not sendable as a header", overrideParams: func(p *params) { p.claims.Subject = "a\r\nx-spiffe-sts-subject: admin" },
			expect: result{code: codes.Unauthenticated, status: typev3.StatusCode_Unauthorized, challenge: invalidToken + `"the token is invalid", refusal="bad_token"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := baseline()
			if tt.overrideParams != nil {
				tt.overrideParams(&p)
			}
			cfg := extauthz.Config{
				Verifier: s.VerifierWith(ststest.APIAudience, tt.overrideConfig),
				Bundles:  s.CA.Bundle(),
				Scopes:   []string{"read", "write"},
			}
			if tt.noScopes {
				cfg.Scopes = nil
			}
			srv, err := extauthz.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			client := startService(t, srv)
			token := s.Mint(t, p.claims, p.boundTo)
			req := checkRequest(p.peer, p.headers(token))
			if p.edit != nil {
				p.edit(req, token)
			}
			resp, err := client.Check(context.Background(), req)
			if err != nil {
				t.Fatal(err)
			}
			got := summarize(t, resp)
			if got.code != tt.expect.code || got.status != tt.expect.status || got.challenge != tt.expect.challenge {
				t.Fatalf("got %v %v %q, want %v %v %q", got.code, got.status, got.challenge, tt.expect.code, tt.expect.status, tt.expect.challenge)
			}
			if strings.Contains(got.challenge, token[:20]) {
				t.Fatal("the challenge echoes the token")
			}
			if tt.expect.code != codes.OK {
				if resp.GetOkResponse() != nil {
					t.Fatal("denied with an OK response")
				}
				return
			}
			if len(got.set) != len(tt.expect.set) {
				t.Fatalf("set %v, want %v", got.set, tt.expect.set)
			}
			for k, v := range tt.expect.set {
				if got.set[k] != v {
					t.Fatalf("%s = %q, want %q (all: %v)", k, got.set[k], v, got.set)
				}
			}
			if strings.Join(got.removed, ",") != strings.Join(tt.expect.removed, ",") {
				t.Fatalf("removed %q, want %q", got.removed, tt.expect.removed)
			}
		})
	}
}

func TestNew(t *testing.T) {
	s := ststest.Start(t, nil)
	for _, tt := range []struct {
		name      string
		cfg       extauthz.Config
		expectErr string
	}{
		{name: "no verifier", cfg: extauthz.Config{Bundles: s.CA.Bundle()}, expectErr: "extauthz: no verifier"},
		{name: "no bundles", cfg: extauthz.Config{Verifier: s.Verifier(ststest.APIAudience)}, expectErr: "extauthz: no bundles"},
		{name: "bad scope", cfg: extauthz.Config{Verifier: s.Verifier(ststest.APIAudience), Bundles: s.CA.Bundle(), Scopes: []string{"a b"}},
			expectErr: `extauthz: invalid scope "a b"`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := extauthz.New(tt.cfg); err == nil || err.Error() != tt.expectErr {
				t.Fatalf("error = %v, want %s", err, tt.expectErr)
			}
		})
	}
}
