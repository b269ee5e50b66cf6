// Package issuer mints the access tokens of spiffe-sts: JWT access tokens as
// profiled by RFC 9068 §2, bound to the caller's X.509 certificate with the
// RFC 8705 §3.1 confirmation claim "cnf": {"x5t#S256": ...}.
//
// An Issuer is built from a Config by New, which fills in defaults and
// validates it:
//
//	signer, err := issuer.GenerateSigner(jwa.ES256) // or diskkey.Open(dir, jwa.ES256)
//	iss, err := issuer.New(issuer.Config{
//		IssuerURL:  "https://sts.example.org",
//		Signer:     signer,
//		DefaultTTL: 5 * time.Minute,
//		Logger:     logger,
//	})
//
// Mint completes the claims the caller decided on (subject, client, audience,
// scope, actor) and signs them. The token is bound to leaf, the certificate
// the client authenticated with, and never outlives it:
//
//	claims := &accesstoken.Claims{
//		Subject:  "spiffe://example.org/workload",
//		ClientID: "spiffe://example.org/workload",
//		Audience: accesstoken.Audience{"spiffe://example.org/api"},
//		Scope:    "read",
//	}
//	token, err := iss.Mint(ctx, claims, leaf, 0)
//	expiresIn := claims.Expiry - claims.IssuedAt
//
// KeySet returns the public keys to serve as the JWKS document; resource
// servers verify tokens with package accesstoken, which never imports this
// package.
//
// Keys sit behind Signer, a crypto.Signer with an RFC 7638 key ID and a JWS
// algorithm (ES256, EdDSA or RS256). GenerateSigner is the in-memory backend
// and package diskkey the persistent one; every backend passes the
// conformance suite in package signertest.
//
// The issuer logs only at debug level, through Config.Logger, and never logs
// a token.
package issuer
