// Package issuer mints the access tokens of spiffe-sts: JWT access tokens as
// profiled by RFC 9068 §2, bound to the caller's X.509 certificate with the
// RFC 8705 §3.1 confirmation claim "cnf": {"x5t#S256": ...}.
//
// An Issuer is built from a Config by New, which fills in defaults and
// validates it:
//
//	keys, err := issuer.NewRingKeys(ring) // a *keyring.Manager, or issuer.StaticKeys(signer)
//	iss, err := issuer.New(issuer.Config{
//		IssuerURL:  "https://sts.example.org",
//		Keys:       keys,
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
// KeySet returns the public keys to serve as the JWKS document, as they are
// at each use; resource servers verify tokens with package accesstoken,
// which never imports this package.
//
// Keys come from Config.Keys, a KeySource read from memory on every Mint:
// StaticKeys(signer, extra...) holds fixed keys (signer signs, extra public
// keys are published beside it), and RingKeys follows a rotating key ring (package
// keyring), signing with its active key and publishing its next, active
// and retired keys; it rebuilds the public key set only when the ring's
// Version changes. A key is a Signer, a crypto.Signer with an RFC 7638 key
// ID (KeyID) and a JWS algorithm (ES256, EdDSA or RS256). GenerateSigner
// is the in-memory backend; every backend passes the conformance suite in
// package signertest.
//
// The issuer logs only at debug level, through Config.Logger, and never logs
// a token.
package issuer
