// Package extissuer verifies subject tokens from issuers outside SPIFFE,
// such as the OIDC provider that signs in the end users of a mesh service.
//
// A frontend that receives an end user's token exchanges it at spiffe-sts
// (RFC 8693 §2.1, subject_token) for a token of its own that says whom it
// acts for. An *Issuer checks that the subject token comes from one
// configured issuer and turns it into accesstoken.Claims; it implements
// exchange.ExternalIssuer:
//
//	corp, err := extissuer.New(ctx, extissuer.Config{
//		Name:       "corp",
//		Issuer:     "https://idp.example.com",
//		JWKSURL:    "https://idp.example.com/jwks",
//		HTTPClient: &http.Client{Timeout: 30 * time.Second},
//		Audience:   "spiffe-sts",
//	})
//	...
//	exchange.New(exchange.Config{..., ExternalIssuers: []exchange.ExternalIssuer{corp}})
//
// New blocks until the JWKS is fetched (or ctx ends), so a server does not
// start with an issuer it cannot verify.
//
// # Verification
//
// Verify accepts a JWS compact serialization (RFC 7515 §7.1) only, and
// checks, in order:
//
//   - the signature, with the key named by the "kid" header; an unknown
//     kid makes a JWKS URL key set fetch the JWKS again (see
//     accesstoken.RemoteKeySet), so the issuer's key rotation needs no
//     restart;
//   - the "alg" header: it must be one of Config.Algorithms and the key's
//     own "alg", so neither "none" nor an HMAC "signed" with the public key
//     is accepted;
//   - "iss" equals Config.Issuer exactly;
//   - "aud" contains Config.Audience;
//   - "exp" is present and in the future, "nbf" and "iat", when present,
//     are not in the future (each with Config.Leeway);
//   - "sub" is present.
//
// The "typ" header is not checked: OIDC providers send "JWT", "at+jwt" or
// nothing; the audience check is what keeps tokens meant for other
// relying parties out.
//
// The returned claims carry iss, sub, aud, exp, iat, nbf, jti, the scope
// ("scope", or else "scp", a string or an array, as Okta and Entra ID send
// it, joined with spaces), the RFC 8693 §4.1 "act" chain as Actor and the
// RFC 8693 §4.4 "may_act" claim as MayAct. Other claims are dropped.
//
// Errors wrap the sentinels below (match them with errors.Is) and never
// contain the token. The package does not log.
//
// # Keys
//
// Keys come from Config.JWKSURL, fetched with Config.HTTPClient and cached
// by an accesstoken.RemoteKeySet, or from Config.JWKS, fixed keys the
// caller has parsed (package cmd/spiffe-sts reads them from a jwks_file).
// Only keys usable for signatures are kept:
//
//   - keys with "use": "enc" and symmetric ("oct") keys are ignored;
//   - a key needs a "kid" of its own (of two keys with one kid, the
//     first is kept), and an RSA key at least 2048 bits;
//   - a key without "alg" (Entra ID publishes such keys) gets the one
//     algorithm of Config.Algorithms that fits its type and curve (RS256
//     for an RSA key under the default algorithms); when none or several
//     fit, the key is rejected, since the token must not choose.
//
// From a JWKS URL, keys that are rejected, or that jwx cannot parse, are
// left out of the set and the rest is used: the issuer's document is not
// under the operator's control. Fixed keys are the operator's, so any
// rejected key makes New fail, and so does a set without a key for one of
// Config.Algorithms.
package extissuer
