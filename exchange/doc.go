// Package exchange is the spiffe-sts token endpoint: OAuth 2.0 token
// exchange (RFC 8693) and client credentials (RFC 6749 §4.4) for SPIFFE
// workloads authenticated by their X509-SVID (RFC 8705 §2.1), issuing
// certificate-bound access tokens (RFC 8705 §3, RFC 9068).
//
// One dispatcher runs the steps every request needs, in this order:
// client authentication by the connection's X509-SVID, parsing the form
// once, the client_id check, the grant's subject, the Policy check, the
// audience and resource check (invalid_target), the scope ceiling, the
// lifetime cap and the binding to the caller's certificate. Each
// subject_token_type has a verifier behind a small interface that only
// establishes the subject; none can skip a shared step.
//
// Errors are protocol.Error values (RFC 6749 §5.2, RFC 8693 §2.2.2),
// mapped at the edge to the HTTP JSON error body (protocol.Error.HTTPStatus)
// or to the gRPC status (protocol.Error.GRPCStatus):
//
//	OAuth error code          HTTP  gRPC
//	invalid_request           400   InvalidArgument
//	invalid_scope             400   InvalidArgument
//	invalid_target            400   InvalidArgument
//	unsupported_grant_type    400   InvalidArgument
//	invalid_client            401   Unauthenticated
//	invalid_grant             400   PermissionDenied
//	unauthorized_client       400   PermissionDenied
//	server_error              500   Internal
//
// The gRPC status carries the OAuth error in a google.rpc.ErrorInfo
// detail: Domain "spiffe-sts" (protocol.ErrorDomain), Reason the code,
// Metadata["error_description"] the description. protocol.ErrorFromStatus
// turns such a status back into a protocol.Error. The identifiers,
// parameter names, paths and the issuer URL rule are in package protocol
// too, which clients import instead of this package.
//
// # gRPC
//
// The same listener serves the gRPC API exchangepb.TokenExchange
// (exchange.proto, package spiffests.exchange.v1): HTTPServer reads the
// start of each HTTP/2 connection (internal/h2sniff) and hands one whose
// first request has a Content-Type of application/grpc (or
// application/grpc+<codec>) to an internal grpc.Server, which serves it
// with gRPC-Go's own HTTP/2 transport, so that a gRPC call costs about
// what an HTTP exchange costs. The other HTTP/2 connections go to
// golang.org/x/net/http2's server; a gRPC call on one of them (a proxy
// that multiplexes both APIs over one connection) is served too, through
// grpc.Server.ServeHTTP, at about twice the cost, and a plain HTTP
// request on a gRPC connection is refused with 415 Unsupported Media Type.
// The client is authenticated by the same function, from the same TLS
// state and per-connection cache, and the request goes through the form's
// parameter checks and the same pipeline, so both APIs accept and refuse
// exactly the same requests. A gRPC client connects with the TLS
// credentials of its X509-SVID:
//
//	creds := credentials.NewTLS(tlsconfig.MTLSClientConfig(x509Source, x509Source, tlsconfig.AuthorizeID(stsID)))
//	conn, err := grpc.NewClient("sts.example.org:8443", grpc.WithTransportCredentials(creds))
//	resp, err := exchangepb.NewTokenExchangeClient(conn).Exchange(ctx, &exchangepb.ExchangeRequest{
//		GrantType:        "urn:ietf:params:oauth:grant-type:token-exchange",
//		SubjectToken:     jwtSVID,
//		SubjectTokenType: "urn:ietf:params:oauth:token-type:jwt",
//		Audience:         []string{"spiffe://example.org/api"},
//	})
//
// exchangeclient.WithGRPC does this for the client library.
//
// # Other OAuth clients
//
// The token endpoint takes an application/x-www-form-urlencoded form or
// the same parameters as a JSON object, so generic clients work as long as
// they connect with the workload's X509-SVID:
//
//   - golang.org/x/oauth2/clientcredentials: ClientID is the SPIFFE ID,
//     AuthStyle oauth2.AuthStyleInParams and no ClientSecret, the audience
//     in EndpointParams, and an mTLS *http.Client in the context under
//     oauth2.HTTPClient. Errors are *oauth2.RetrieveError.
//   - google.golang.org/grpc/credentials/sts sends JSON but dials with its
//     own client (system roots, no client certificate), so it reaches
//     spiffe-sts only through a local proxy that originates mTLS with the
//     workload's SVID (TokenExchangeServiceURI http://127.0.0.1:port/token).
//     It asks for Google's cloud-platform scope unless Scope is set, and
//     reuses a token only while more than five minutes of it are left.
//
// Wiring, as cmd/spiffe-sts does it:
//
//	srv, err := exchange.New(exchange.Config{
//		IssuerURL:   "https://sts.example.org:8443",
//		TrustDomain: td,
//		SVIDs:       x509Source, X509Bundles: x509Source, JWTBundles: bundleSource,
//		Policy:      policy,
//		Minter:      iss, Keys: iss.KeySet(),
//	})
//	httpServer := srv.HTTPServer(x509Source)
//	err = httpServer.ServeTLS(listener, "", "")
//
// httpServer.Shutdown also stops the gRPC API gracefully.
//
// The server also serves RFC 8414 metadata at
// /.well-known/oauth-authorization-server and
// /.well-known/openid-configuration, the JWKS at /jwks, and /healthz and
// /readyz. Only /token, /introspect and the gRPC API require a client
// certificate.
//
// RFC 7662 introspection at /introspect (POST, form token=...) serves
// resource servers that check the certificate binding themselves: the
// caller authenticates with its X509-SVID (tls_client_auth) and learns
// about a token only when its "aud" holds the caller's SPIFFE ID or an
// audience of the caller's policy rule's IntrospectAudiences (policy key
// introspect_audiences); the answer has the RFC 7662 §2.2 claims, cnf and
// act. Anything else, expired, withdrawn, foreign or malformed, is
// {"active":false}, with the reason in the log and the audit record only.
// Every introspection writes an audit record (Operation "introspect":
// caller, proxy, outcome, the token's kid and, once verified, jti; never
// the token) and counts in spiffe_sts_introspections_total{outcome}.
//
// Behind proxies that terminate mTLS, Config.Forwarded (package
// spiffeid/forwarded; server keys trusted_proxies and forwarded_format)
// serves a trusted proxy's request as the client whose certificate it
// forwards, on /token, /introspect and the gRPC API; the audit record's
// proxy_spiffe_id names the proxy.
//
// Limits: each caller's requests to /token, /introspect and the gRPC API
// are charged to a token bucket keyed by its authenticated SPIFFE ID,
// after client authentication (which verifies the client's chain, a
// forwarded one too, once per connection) and before the request body is
// read and any of its tokens checked, at the RateLimit of its policy rule
// or else Config.DefaultRateLimit. Over it the answer is
// temporarily_unavailable as HTTP 429 with Retry-After (RFC 6585 §4, RFC
// 9110 §10.2.3), gRPC ResourceExhausted with a RetryInfo.
// Config.MaxInFlight caps the requests served at once, counted from when
// the body has been read (a slow body holds no slot); the ones over it
// get 503 with Retry-After: 1 (gRPC Unavailable). Both are audited and
// counted with the outcomes rate_limited and overloaded:
//
//	srv, err := exchange.New(exchange.Config{
//		// ...
//		DefaultRateLimit: &stsid.RateLimit{PerSecond: 50, Burst: 100},
//		MaxInFlight:      1024,
//		TLSMinVersion:    tls.VersionTLS13,
//	})
package exchange
