// Package httpauth is net/http middleware that admits requests carrying a
// valid spiffe-sts access token bound to the client's X.509-SVID.
//
// The token travels in the Authorization header as "Bearer <token>"
// (RFC 6750 §2.1; tokens in forms or query strings are not accepted). The
// middleware verifies it with an accesstoken.Verifier against
// r.TLS.PeerCertificates[0], the leaf certificate of the request's
// connection (RFC 8705 §3.1), and stores the verified claims in the
// request's context:
//
//	v := accesstoken.NewVerifier(stsURL, keys, &accesstoken.Config{
//		Audiences: []string{"spiffe://example.org/api"},
//	})
//	mux := http.NewServeMux()
//	mux.Handle("GET /orders", httpauth.Middleware(v, httpauth.WithScopes("read"))(listOrders))
//	srv := &http.Server{
//		Handler:   mux,
//		TLSConfig: tlsconfig.MTLSServerConfig(svids, bundles, tlsconfig.AuthorizeMemberOf(td)),
//	}
//
// and in a handler:
//
//	claims, _ := accesstoken.FromContext(r.Context())
//
// The http.Server's TLS configuration must require and verify client
// certificates, as go-spiffe's tlsconfig.MTLSServerConfig does: the
// middleware trusts the peer chain as verified by the TLS layer and only
// compares the token's binding with its leaf. A request without TLS or
// without a client certificate is refused.
//
// Behind a proxy or sidecar that terminates mTLS, opt in with
// WithTrustedProxies: requests from a trusted proxy are then checked
// against the client certificate it forwards (Envoy's
// x-forwarded-client-cert or RFC 9440 Client-Cert), and a forwarding
// header from any other hop is refused:
//
//	policy, err := forwarded.New(forwarded.Config{
//		Format:         forwarded.FormatXFCC,
//		TrustedProxies: []stsid.Pattern{stsid.RequirePattern("spiffe://example.org/ns/edge/sa/envoy")},
//		Bundles:        bundles,
//	})
//	...
//	httpauth.Middleware(v, httpauth.WithTrustedProxies(policy))(listOrders)
//
// Failures are answered as RFC 6750 §3 describes, with a WWW-Authenticate
// challenge and no other detail; descriptions never echo the token. The
// package logs nothing.
package httpauth
