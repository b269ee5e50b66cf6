package exchange_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/spiffe-sts/spiffe-sts/exchange"
	"github.com/spiffe-sts/spiffe-sts/exchange/exchangepb"
	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
	"github.com/spiffe-sts/spiffe-sts/internal/testca"
)

// protoFromForm is the gRPC request with the form's parameters.
func protoFromForm(p url.Values) *exchangepb.ExchangeRequest {
	return &exchangepb.ExchangeRequest{
		GrantType:          p.Get("grant_type"),
		ClientId:           p.Get("client_id"),
		Scope:              p.Get("scope"),
		Audience:           p["audience"],
		Resource:           p["resource"],
		SubjectToken:       p.Get("subject_token"),
		SubjectTokenType:   p.Get("subject_token_type"),
		ActorToken:         p.Get("actor_token"),
		ActorTokenType:     p.Get("actor_token_type"),
		RequestedTokenType: p.Get("requested_token_type"),
		Impersonate:        p.Get("impersonate") == "true",
	}
}

// TestGRPCExchange sends each request to both APIs: the gRPC API must
// answer as the HTTP token endpoint does, with the OAuth error carried in
// an ErrorInfo of a status of the mapped code.
func TestGRPCExchange(t *testing.T) {
	trail := new(memAudit)
	f := newFixture(t, func(c *exchange.Config) { c.Audit = trail })
	ctx := context.Background()

	type expected struct {
		code     string // OAuth error code; "" for success
		desc     string // "*": any, as long as both APIs agree
		grpcCode codes.Code
		status   int
		scope    string // the response's scope
		granted  string // the token's scope claim
	}
	refused := func(code string, grpcCode codes.Code, status int, desc string) func(*expected) {
		return func(e *expected) { e.code, e.grpcCode, e.status, e.desc = code, grpcCode, status, desc }
	}
	tests := []struct {
		name             string
		caller           string // SPIFFE ID of the client certificate; "-" for none
		overrideParams   func(t *testing.T, p url.Values)
		authorization    string // sent as Authorization header and metadata
		overrideExpected func(*expected)
	}{
		{name: "baseline: JWT-SVID exchange"},
		{
			name: "client_credentials",
			overrideParams: func(_ *testing.T, p url.Values) {
				p.Set("grant_type", "client_credentials")
				p.Del("subject_token")
				p.Del("subject_token_type")
			},
		},
		{
			name:             "scope narrowed to what policy allows",
			overrideParams:   func(_ *testing.T, p url.Values) { p.Set("scope", "read delete") },
			overrideExpected: func(e *expected) { e.scope = "read" },
		},
		{
			name:           "unsupported grant type",
			overrideParams: func(_ *testing.T, p url.Values) { p.Set("grant_type", "password") },
			overrideExpected: refused("unsupported_grant_type", codes.InvalidArgument, 400,
				"supported grant types are "+string(protocol.GrantTypeTokenExchange)+" and client_credentials"),
		},
		{
			name:           "grant type missing",
			overrideParams: func(_ *testing.T, p url.Values) { p.Del("grant_type") },
			overrideExpected: refused("invalid_request", codes.InvalidArgument, 400,
				"grant_type is required"),
		},
		{
			// RFC 6749 §3.2: an empty value is as if not sent.
			name:           "empty audience value",
			overrideParams: func(_ *testing.T, p url.Values) { p.Add("audience", "") },
		},
		{
			name:          "another client authentication",
			authorization: "Basic d29ya2xvYWQ6",
			overrideExpected: refused("invalid_request", codes.InvalidArgument, 400,
				"authenticate with the X509-SVID (tls_client_auth) only"),
		},
		{
			name:           "audience not allowed",
			overrideParams: func(_ *testing.T, p url.Values) { p.Set("audience", "spiffe://example.org/db") },
			overrideExpected: refused("invalid_target", codes.InvalidArgument, 400,
				`audience "spiffe://example.org/db" is not allowed for this client`),
		},
		{
			name:           "resource with a fragment",
			overrideParams: func(_ *testing.T, p url.Values) { p.Set("resource", "https://api.example.org/orders#x") },
			overrideExpected: refused("invalid_target", codes.InvalidArgument, 400,
				"resource must be an absolute URI without a fragment"),
		},
		{
			name:           "no scope allowed",
			overrideParams: func(_ *testing.T, p url.Values) { p.Set("scope", "delete") },
			overrideExpected: refused("invalid_scope", codes.InvalidArgument, 400,
				"none of the requested scopes is allowed for this client"),
		},
		{
			name:   "caller denied by policy",
			caller: deniedID,
			overrideParams: func(t *testing.T, p url.Values) {
				p.Set("subject_token", f.jwtSVID(t, deniedID))
			},
			overrideExpected: refused("unauthorized_client", codes.PermissionDenied, 400,
				"no policy rule allows "+deniedID),
		},
		{
			name: "forged JWT-SVID",
			overrideParams: func(t *testing.T, p url.Values) {
				p.Set("subject_token", testca.SignJWT(t, testca.NewKey(t), "jwt-example.org", map[string]any{
					"sub": workloadID, "aud": []string{f.issuerURL}, "exp": time.Now().Add(time.Minute).Unix(),
				}))
			},
			overrideExpected: refused("invalid_grant", codes.PermissionDenied, 400, "*"),
		},
		{
			name: "JWT-SVID of another workload, not sent to the caller",
			overrideParams: func(t *testing.T, p url.Values) {
				p.Set("subject_token", f.jwtSVID(t, otherID))
			},
			overrideExpected: refused("invalid_grant", codes.PermissionDenied, 400,
				"the subject token was neither issued nor sent to this client"),
		},
		{
			name:   "client from an untrusted CA",
			caller: "spiffe://evil.example/ns/prod/sa/web",
			overrideExpected: refused("invalid_client", codes.Unauthenticated, 401,
				"the client certificate is not a valid X509-SVID of a trusted trust domain"),
		},
		{
			name:   "no client certificate",
			caller: "-",
			overrideExpected: refused("invalid_client", codes.Unauthenticated, 401,
				"a client certificate (X509-SVID) is required"),
		},
		{
			name:           "client_id of someone else",
			overrideParams: func(_ *testing.T, p url.Values) { p.Set("client_id", otherID) },
			overrideExpected: refused("invalid_client", codes.Unauthenticated, 401,
				"client_id does not match the client certificate's SPIFFE ID"),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			params := f.exchangeParams(t)
			if tt.overrideParams != nil {
				tt.overrideParams(t, params)
			}
			want := expected{status: 200, grpcCode: codes.OK, granted: "read"}
			if params.Get("scope") == "" {
				want.scope = "read"
			}
			if tt.overrideExpected != nil {
				tt.overrideExpected(&want)
			}
			caller, svid := f.caller(t, tt.caller)

			// HTTP.
			req, err := http.NewRequest(http.MethodPost, f.issuerURL+protocol.PathToken, strings.NewReader(params.Encode()))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", formType)
			if tt.authorization != "" {
				req.Header.Set("Authorization", tt.authorization)
			}
			resp, err := f.client(svid).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			raw, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			var httpBody struct {
				protocol.Error
				protocol.Response
			}
			if err := json.Unmarshal(raw, &httpBody); err != nil {
				t.Fatalf("HTTP response is not JSON: %q", raw)
			}
			if resp.StatusCode != want.status {
				t.Fatalf("HTTP status = %d, want %d; body %s", resp.StatusCode, want.status, raw)
			}

			// gRPC.
			callCtx := ctx
			if tt.authorization != "" {
				callCtx = metadata.AppendToOutgoingContext(ctx, "authorization", tt.authorization)
			}
			mark := trail.mark()
			var trailer metadata.MD
			got, err := f.GRPCClient(t, svid).Exchange(callCtx, protoFromForm(params), grpc.Trailer(&trailer))
			st := status.Convert(err)
			if ids := trailer.Get("x-request-id"); len(ids) != 1 {
				t.Errorf("trailer x-request-id = %q, want one", ids)
			} else {
				rec := checkAudit(t, trail, mark, want.code, ids[0], params.Get("subject_token"), got.GetAccessToken())
				if rec.Transport != "grpc" {
					t.Errorf("audit transport = %q, want grpc", rec.Transport)
				}
			}
			if st.Code() != want.grpcCode {
				t.Fatalf("gRPC code = %v, want %v; status %v", st.Code(), want.grpcCode, st)
			}

			if want.code != "" {
				info := errorInfo(t, st)
				if info.GetDomain() != protocol.ErrorDomain || info.GetReason() != want.code {
					t.Errorf("ErrorInfo domain, reason = %q, %q; want %q, %q", info.GetDomain(), info.GetReason(), protocol.ErrorDomain, want.code)
				}
				desc := info.GetMetadata()["error_description"]
				if want.desc != "*" && desc != want.desc {
					t.Errorf("ErrorInfo error_description = %q, want %q", desc, want.desc)
				}
				if msg := want.code + ": " + desc; st.Message() != msg {
					t.Errorf("status message = %q, want %q", st.Message(), msg)
				}
				oauthErr, ok := protocol.ErrorFromStatus(st)
				if !ok || oauthErr != (protocol.Error{Code: want.code, Description: desc}) {
					t.Errorf("ErrorFromStatus = %v, %v", oauthErr, ok)
				}
				// The same request over HTTP gets the same error.
				if httpBody.Error != oauthErr {
					t.Errorf("HTTP error %+v, gRPC error %+v; want the same", httpBody.Error, oauthErr)
				}
				if got != nil {
					t.Error("an error carries a response")
				}
				return
			}

			// Both succeed alike; each token is bound to the caller.
			if got.GetScope() != want.scope || httpBody.Scope != want.scope {
				t.Errorf("scope = %q over gRPC, %q over HTTP; want %q", got.GetScope(), httpBody.Scope, want.scope)
			}
			if got.GetTokenType() != "Bearer" || got.GetIssuedTokenType() != string(httpBody.IssuedTokenType) {
				t.Errorf("token_type, issued_token_type = %q, %q over gRPC; %q, %q over HTTP",
					got.GetTokenType(), got.GetIssuedTokenType(), httpBody.TokenType, httpBody.IssuedTokenType)
			}
			if d := got.GetExpiresIn() - httpBody.ExpiresIn; got.GetExpiresIn() <= 0 || d < -1 || d > 1 {
				t.Errorf("expires_in = %d over gRPC, %d over HTTP", got.GetExpiresIn(), httpBody.ExpiresIn)
			}
			for api, tok := range map[string]string{"gRPC": got.GetAccessToken(), "HTTP": httpBody.AccessToken} {
				claims, err := f.verifier(apiAud).Verify(ctx, tok, svid.Certificates[0])
				if err != nil {
					t.Fatalf("%s token does not verify for the caller's certificate: %v", api, err)
				}
				if claims.Subject != caller || claims.ClientID != caller || claims.Scope != want.granted {
					t.Errorf("%s token sub, client_id, scope = %q, %q, %q", api, claims.Subject, claims.ClientID, claims.Scope)
				}
				if _, err := f.verifier(apiAud).Verify(ctx, tok, f.svid(t, otherID).Certificates[0]); err == nil {
					t.Errorf("the %s token verifies with another workload's certificate", api)
				}
			}
		})
	}
}

func errorInfo(t *testing.T, st *status.Status) *errdetails.ErrorInfo {
	t.Helper()
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info
		}
	}
	t.Fatalf("status %v has no ErrorInfo; details %v", st, st.Details())
	return nil
}
