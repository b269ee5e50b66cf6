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
// forgotten. Verification without it is spelled InsecureVerifyWithoutBinding.
//
// This package is imported by resource servers; it never imports the issuer
// and logs nothing: every failure is returned as an error.
package accesstoken
