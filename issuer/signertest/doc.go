// Package signertest is the conformance suite every issuer.Signer backend
// must pass.
//
// Call Run from a backend's tests with a function making a signer:
//
//	func TestSigner(t *testing.T) {
//		for _, alg := range []jwa.SignatureAlgorithm{jwa.ES256, jwa.EdDSA, jwa.RS256} {
//			t.Run(alg.String(), func(t *testing.T) {
//				signertest.Run(t, alg, func(t *testing.T) issuer.Signer {
//					s, err := mybackend.Open(t.TempDir(), alg)
//					if err != nil {
//						t.Fatal(err)
//					}
//					return s
//				})
//			})
//		}
//	}
//
// Run checks the key type, that KeyID is the RFC 7638 JWK thumbprint, that
// issuer.PublicJWK publishes the right public key, and that JWS signatures
// made with jws.Sign verify (and tampered ones do not), in the encoding
// RFC 7518 §3 requires.
package signertest
