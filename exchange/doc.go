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
// Errors are Error values (RFC 6749 §5.2, RFC 8693 §2.2.2) mapped to the
// HTTP response in one place.
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
// The server also serves RFC 8414 metadata at
// /.well-known/oauth-authorization-server and
// /.well-known/openid-configuration, the JWKS at /jwks, and /healthz and
// /readyz. Only /token requires a client certificate.
package exchange
