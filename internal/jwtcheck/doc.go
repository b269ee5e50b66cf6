// Package jwtcheck holds the token checks that every verifier of this
// module applies the same way, written once:
//
//   - IsCompactJWS, the shape of a JWS compact serialization (RFC 7515
//     §7.1), checked before any parsing;
//   - KeyProvider, which selects the verification key by the header's
//     "kid" and insists that the header's "alg" is an accepted one and the
//     key's own (RFC 7515 §4.1.1, §4.1.4);
//   - Expired and NotYetValid, the "exp" and "nbf" checks with leeway
//     (RFC 7519 §4.1.4, §4.1.5);
//   - CheckScopeToken, the RFC 6749 §3.3 scope-token syntax.
//
// The access-token verifier (package accesstoken), the external-issuer
// verifier (package extissuer), the policy (package spiffeid) and the
// exchange use it:
//
//	provider := jwtcheck.KeyProvider(keys, []jwa.SignatureAlgorithm{jwa.ES256()})
//	if !jwtcheck.IsCompactJWS(raw) {
//		return errMalformed
//	}
//	payload, err := jws.Verify([]byte(raw), jws.WithKeyProvider(provider))
//	...
//	if jwtcheck.Expired(now, claims.Expiry, leeway) {
//		return errExpired
//	}
//
// The package is internal to the module: its errors carry no protocol
// meaning, and each caller maps them to its own.
package jwtcheck
