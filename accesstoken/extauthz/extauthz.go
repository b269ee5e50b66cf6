package extauthz

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strings"

	"github.com/dunglas/httpsfv"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/accesstoken/internal/bearer"
	stsid "github.com/spiffe-sts/spiffe-sts/spiffeid"
)

// Headers the service sets on requests it allows. Every request header
// with HeaderPrefix is replaced or removed, so an upstream sees only the
// values this service verified.
const (
	HeaderPrefix = "x-spiffe-sts-"
	// HeaderSubject is the token's "sub".
	HeaderSubject = HeaderPrefix + "subject"
	// HeaderClientID is the token's "client_id" (RFC 9068 §2.2).
	HeaderClientID = HeaderPrefix + "client-id"
	// HeaderAct is the RFC 8693 §4.1 "act" chain, the current actor
	// first, as an RFC 8941 §3.1 List of Strings; absent without
	// delegation.
	HeaderAct = HeaderPrefix + "act"
	// HeaderScope is the granted scopes, space-separated; absent when
	// none.
	HeaderScope = HeaderPrefix + "scope"
)

// Config configures a Server.
type Config struct {
	// Verifier checks the tokens: signature, claims, and the binding to
	// the downstream certificate. Required.
	Verifier *accesstoken.Verifier
	// Bundles verify the downstream certificate Envoy passes as an
	// X509-SVID. Required.
	Bundles x509bundle.Source
	// Scopes are required of every token; requests lacking one get 403
	// insufficient_scope.
	Scopes []string
}

// Server implements envoy.service.auth.v3.Authorization.
type Server struct {
	authv3.UnimplementedAuthorizationServer
	cfg            Config
	scopeChallenge string
}

// New returns a Server for cfg.
func New(cfg Config) (*Server, error) {
	switch {
	case cfg.Verifier == nil:
		return nil, errors.New("extauthz: no verifier")
	case cfg.Bundles == nil:
		return nil, errors.New("extauthz: no bundles")
	}
	for _, s := range cfg.Scopes {
		if !bearer.ValidScope(s) {
			return nil, fmt.Errorf("extauthz: invalid scope %q", s)
		}
	}
	cfg.Scopes = append([]string(nil), cfg.Scopes...)
	return &Server{
		cfg: cfg,
		scopeChallenge: `Bearer error="insufficient_scope", error_description="the token lacks a required scope", scope="` +
			strings.Join(cfg.Scopes, " ") + `"`,
	}, nil
}

// Register registers s on r.
func (s *Server) Register(r grpc.ServiceRegistrar) {
	authv3.RegisterAuthorizationServer(r, s)
}

// Check authorizes one request that Envoy's ext_authz filter forwards,
// configured with include_peer_certificate so that
// attributes.source.certificate holds the downstream client certificate
// (URL-encoded PEM). It verifies that certificate as an X509-SVID against
// the bundles, and the bearer token of the authorization header (RFC 6750
// §2.1) with the Verifier, binding included (RFC 8705 §3.1).
//
// Allowed requests go upstream with the Header* headers set to the
// verified identity and any other x-spiffe-sts-* header removed. Denied
// ones get an RFC 6750 §3 answer:
//
//   - no bearer token: 401, WWW-Authenticate: Bearer
//   - an invalid token, or a missing or invalid client certificate: 401,
//     Bearer error="invalid_token", a fixed error_description and
//     refusal="bad_token" (accesstoken.ChallengeParamRefusal); a token
//     bound to another certificate has "the token is not bound to the
//     client certificate" and refusal="binding_mismatch", on which
//     clients re-bind (accesstoken.ParseChallenge reads it)
//   - a token lacking a required scope: 403, Bearer error="insufficient_scope"
//
// Check answers every request with a CheckResponse and never a gRPC
// error, so a failure is never mistaken for a transport problem (which
// Envoy's failure_mode_allow could let through).
func (s *Server) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	httpReq := req.GetAttributes().GetRequest().GetHttp()
	headers := requestHeaders(httpReq)
	raw, err := bearer.Token(headers["authorization"])
	switch {
	case errors.Is(err, bearer.ErrMissing):
		return denied(codes.Unauthenticated, typev3.StatusCode_Unauthorized, "Bearer"), nil
	case err != nil:
		return invalidToken(err), nil
	}
	peerCert := req.GetAttributes().GetSource().GetCertificate()
	if peerCert == "" {
		return invalidToken(accesstoken.ErrNoCertificate), nil
	}
	peer, err := s.verifyPeer(peerCert)
	if err != nil {
		return badToken("the client certificate is not a valid X509-SVID"), nil
	}
	claims, err := s.cfg.Verifier.Verify(ctx, raw, peer.Leaf)
	if err != nil {
		return invalidToken(err), nil
	}
	if len(bearer.MissingScopes(claims, s.cfg.Scopes)) > 0 {
		return denied(codes.PermissionDenied, typev3.StatusCode_Forbidden, s.scopeChallenge), nil
	}
	return allowed(claims, headers)
}

// verifyPeer decodes Envoy's URL-encoded PEM (one certificate) and
// verifies it as an X509-SVID.
func (s *Server) verifyPeer(v string) (stsid.Peer, error) {
	decoded, err := url.PathUnescape(v)
	if err != nil {
		return stsid.Peer{}, err
	}
	block, rest := pem.Decode([]byte(decoded))
	if block == nil || block.Type != "CERTIFICATE" || len(strings.TrimSpace(string(rest))) != 0 {
		return stsid.Peer{}, errors.New("extauthz: not one PEM certificate")
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return stsid.Peer{}, err
	}
	return stsid.VerifyPeer([]*x509.Certificate{leaf}, s.cfg.Bundles)
}

// requestHeaders returns the request's headers by lower-case name. Envoy
// sends them in headers (one value per name, repeated ones joined with
// ",") or, with encode_raw_headers, in header_map (one entry per line).
func requestHeaders(r *authv3.AttributeContext_HttpRequest) map[string][]string {
	out := map[string][]string{}
	for k, v := range r.GetHeaders() {
		k = strings.ToLower(k)
		out[k] = append(out[k], v)
	}
	for _, h := range r.GetHeaderMap().GetHeaders() {
		k := strings.ToLower(h.GetKey())
		v := h.GetValue()
		if v == "" {
			v = string(h.GetRawValue())
		}
		out[k] = append(out[k], v)
	}
	return out
}

func allowed(claims *accesstoken.Claims, headers map[string][]string) (*authv3.CheckResponse, error) {
	set := map[string]string{HeaderSubject: claims.Subject, HeaderClientID: claims.ClientID}
	if claims.Scope != "" {
		set[HeaderScope] = claims.Scope
	}
	if chain := claims.ActorChain(); len(chain) > 0 {
		list := make(httpsfv.List, len(chain))
		for i, sub := range chain {
			list[i] = httpsfv.NewItem(sub)
		}
		act, err := httpsfv.Marshal(list)
		if err != nil {
			// An actor that is not printable ASCII cannot be passed on
			// faithfully: fail closed.
			return badToken("the token is invalid"), nil
		}
		set[HeaderAct] = act
	}
	ok := &authv3.OkHttpResponse{}
	for _, name := range []string{HeaderSubject, HeaderClientID, HeaderScope, HeaderAct} {
		v, present := set[name]
		if !present {
			ok.HeadersToRemove = append(ok.HeadersToRemove, name)
			continue
		}
		if !validHeaderValue(v) {
			return badToken("the token is invalid"), nil
		}
		ok.Headers = append(ok.Headers, header(name, v))
	}
	// Anything else the client sent under our prefix goes too.
	var extra []string
	for name := range headers {
		if _, ours := set[name]; !ours && strings.HasPrefix(name, HeaderPrefix) && !isFixedName(name) {
			extra = append(extra, name)
		}
	}
	sort.Strings(extra)
	ok.HeadersToRemove = append(ok.HeadersToRemove, extra...)
	return &authv3.CheckResponse{
		Status:       &rpcstatus.Status{Code: int32(codes.OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: ok},
	}, nil
}

func isFixedName(name string) bool {
	switch name {
	case HeaderSubject, HeaderClientID, HeaderScope, HeaderAct:
		return true
	}
	return false
}

// validHeaderValue reports whether v can be sent as a header value as is
// (RFC 9110 §5.5: no control bytes, no leading or trailing whitespace).
func validHeaderValue(v string) bool {
	if v == "" || v[0] == ' ' || v[len(v)-1] == ' ' {
		return false
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// header overwrites name (RFC 9110 field names are case-insensitive;
// Envoy matches them so), replacing any value the client sent.
func header(name, value string) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: name, Value: value},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	}
}

// invalidToken is the RFC 6750 §3 answer for a token Verify rejected
// with err.
func invalidToken(err error) *authv3.CheckResponse {
	return denied(codes.Unauthenticated, typev3.StatusCode_Unauthorized, bearer.InvalidToken(err))
}

// badToken is the RFC 6750 §3 answer for a refusal that re-binding cannot
// cure; description is one of a fixed set of phrases.
func badToken(description string) *authv3.CheckResponse {
	return denied(codes.Unauthenticated, typev3.StatusCode_Unauthorized,
		bearer.InvalidTokenChallenge(description, accesstoken.RefusalBadToken))
}

func denied(code codes.Code, httpStatus typev3.StatusCode, challenge string) *authv3.CheckResponse {
	return &authv3.CheckResponse{
		Status: &rpcstatus.Status{Code: int32(code)},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status: &typev3.HttpStatus{Code: httpStatus},
			Headers: []*corev3.HeaderValueOption{
				header("www-authenticate", challenge),
				header("cache-control", "no-store"),
			},
		}},
	}
}
