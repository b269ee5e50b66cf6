// Package accesstoken owns the format of spiffe-sts access tokens and verifies
// them on the resource-server side.
//
// Tokens are JWT access tokens as profiled by RFC 9068, bound to the X.509
// certificate of the client they were issued to with the RFC 8705 §3.1
// confirmation claim:
//
//	"cnf": {"x5t#S256": "<base64url SHA-256 of the certificate's DER>"}
//
// A resource server verifies a token against the issuer's keys and the leaf
// certificate of the mTLS connection the token arrived on:
//
//	keys, _ := accesstoken.ParseStaticKeySet(jwksJSON)
//	v := accesstoken.NewVerifier("https://sts.example.org", keys, &accesstoken.Config{
//		Audiences: []string{"spiffe://example.org/api"},
//	})
//	claims, err := v.Verify(ctx, raw, r.TLS.PeerCertificates[0])
//
// The certificate is a required argument, so the binding check cannot be
// forgotten, and this package has no way to verify a token without it.
//
// # Keys
//
// A StaticKeySet holds fixed keys, for tests and offline use. A
// RemoteKeySet fetches the issuer's JWKS, over mTLS, before it returns,
// and fetches it again when a token names an unknown key (one fetch for
// all concurrent lookups, at most one per MinRefreshInterval) or when the
// keys are older than RefreshInterval:
//
//	client := &http.Client{Transport: &http.Transport{
//		TLSClientConfig: tlsconfig.MTLSClientConfig(src, src, tlsconfig.AuthorizeID(stsID)),
//	}}
//	keys, err := accesstoken.NewRemoteKeySet(ctx, "https://sts.example.org/jwks",
//		accesstoken.RemoteKeySetConfig{HTTPClient: client})
//
// # Cache
//
// A Verifier remembers the tokens that passed Verify (Config.CacheSize), so
// a token presented again costs a map lookup instead of a signature check.
// Every hit still checks expiry and the certificate binding: a token is
// never accepted with a certificate other than the one it is bound to.
//
// # Metrics
//
// Config.Metrics counts verifications by outcome and cache hits and misses
// (spiffe_sts_verifier_verifications_total{outcome},
// spiffe_sts_verifier_cache_requests_total{result}) on a registry of the
// caller's, never the global one; without it nothing is counted:
//
//	m, err := accesstoken.NewMetrics(reg) // once per registry
//	v := accesstoken.NewVerifier(issuerURL, keys, &accesstoken.Config{Audiences: auds, Metrics: m})
//
// # Middleware
//
// Packages grpcauth and httpauth verify the token of each gRPC call or
// HTTP request and store its claims in the context; handlers read them
// with FromContext:
//
//	claims, ok := accesstoken.FromContext(ctx)
//
// # Refusals
//
// The middlewares answer a refused token with RFC 6750 §3 invalid_token
// plus a Refusal that tells a token bound to another certificate
// (RefusalBindingMismatch, which a client can cure by re-binding) from a
// bad one (RefusalBadToken): over HTTP the auth-param refusal="..."
// (ChallengeParamRefusal), over gRPC an ErrorInfo detail (ErrorInfoDomain).
// Clients read the challenge with ParseChallenge:
//
//	if c, ok := accesstoken.ParseChallenge(resp.Header.Values("WWW-Authenticate")); ok &&
//		c.Refusal == accesstoken.RefusalBindingMismatch {
//		// re-bind the token and retry
//	}
//
// This package is imported by resource servers; it never imports the issuer
// and logs nothing: every failure is returned as an error.
package accesstoken
