package signertest

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"math/big"
	"strings"
	"sync"
	"testing"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"

	"github.com/spiffe-sts/spiffe-sts/issuer"
)

// Run checks that signers made by newSigner behave as an issuer.Signer must
// for alg:
//
//   - Algorithm returns alg, and Public returns a key of the matching type
//     (P-256 for ES256, Ed25519 for EdDSA, RSA of at least 2048 bits for RS256);
//   - KeyID is the RFC 7638 JWK thumbprint (SHA-256, unpadded base64url) of
//     the public key, and is the same on every call;
//   - PublicJWK holds only the public key, equal to Public, with "kid", "alg"
//     and "use": "sig";
//   - a JWS signed through jws.Sign with the signer verifies with jws.Verify
//     against PublicJWK, its signature is in JWS form (raw r||s for ES256,
//     RFC 7518 §3.4), and a tampered payload or signature fails;
//   - the signer can be used from several goroutines at once.
//
// newSigner is called once per subtest.
func Run(t *testing.T, alg jwa.SignatureAlgorithm, newSigner func(t *testing.T) issuer.Signer) {
	t.Helper()

	t.Run("Algorithm", func(t *testing.T) {
		s := newSigner(t)
		if got := s.Algorithm(); got != alg {
			t.Fatalf("Algorithm() = %q, want %q", got, alg)
		}
		checkKeyType(t, alg, s.Public())
	})

	t.Run("KeyID", func(t *testing.T) {
		s := newSigner(t)
		want := rfc7638(t, s.Public())
		if got := s.KeyID(); got != want {
			t.Fatalf("KeyID() = %q, want RFC 7638 thumbprint %q", got, want)
		}
		if again := s.KeyID(); again != want {
			t.Fatalf("KeyID() changed between calls: %q then %q", want, again)
		}
	})

	t.Run("PublicJWK", func(t *testing.T) {
		s := newSigner(t)
		key, err := issuer.PublicJWK(s)
		if err != nil {
			t.Fatalf("PublicJWK: %v", err)
		}
		if private, err := jwk.IsPrivateKey(key); err != nil || private {
			t.Fatalf("PublicJWK returned a private key (IsPrivateKey = %v, %v)", private, err)
		}
		if got, _ := key.KeyID(); got != s.KeyID() {
			t.Errorf("kid = %q, want %q", got, s.KeyID())
		}
		if got, _ := key.Algorithm(); got.String() != alg.String() {
			t.Errorf("alg = %q, want %q", got, alg)
		}
		if got, _ := key.KeyUsage(); got != string(jwk.ForSignature) {
			t.Errorf("use = %q, want %q", got, jwk.ForSignature)
		}
		var raw any
		if err := jwk.Export(key, &raw); err != nil {
			t.Fatalf("Export: %v", err)
		}
		eq, ok := s.Public().(interface{ Equal(crypto.PublicKey) bool })
		if !ok || !eq.Equal(raw) {
			t.Errorf("PublicJWK key %T does not equal Public() %T", raw, s.Public())
		}
	})

	t.Run("SignVerify", func(t *testing.T) {
		s := newSigner(t)
		pub, err := issuer.PublicJWK(s)
		if err != nil {
			t.Fatalf("PublicJWK: %v", err)
		}
		payload := []byte(`{"sub":"spiffe://example.org/workload"}`)
		token := sign(t, s, payload)

		got, err := jws.Verify(token, jws.WithKey(alg, pub))
		if err != nil {
			t.Fatalf("jws.Verify: %v", err)
		}
		if !bytes.Equal(got, payload) {
			t.Fatalf("payload = %s, want %s", got, payload)
		}
		parts := strings.Split(string(token), ".")
		if len(parts) != 3 {
			t.Fatalf("token has %d parts, want 3", len(parts))
		}
		checkRawSignature(t, alg, s.Public(), parts)

		tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"spiffe://example.org/evil"}`)) + "." + parts[2]
		if _, err := jws.Verify([]byte(tampered), jws.WithKey(alg, pub)); err == nil {
			t.Error("jws.Verify accepted a tampered payload")
		}
		sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
		sig[len(sig)/2] ^= 1
		badSig := parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(sig)
		if _, err := jws.Verify([]byte(badSig), jws.WithKey(alg, pub)); err == nil {
			t.Error("jws.Verify accepted a tampered signature")
		}
	})

	t.Run("Concurrent", func(t *testing.T) {
		s := newSigner(t)
		pub, err := issuer.PublicJWK(s)
		if err != nil {
			t.Fatalf("PublicJWK: %v", err)
		}
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for range 4 {
					token, err := jws.Sign([]byte("{}"), jws.WithKey(s.Algorithm(), s))
					if err != nil {
						t.Errorf("jws.Sign: %v", err)
						return
					}
					if _, err := jws.Verify(token, jws.WithKey(alg, pub)); err != nil {
						t.Errorf("jws.Verify: %v", err)
						return
					}
				}
			})
		}
		wg.Wait()
	})
}

// sign signs payload with s through jws.Sign, with a "kid" header.
func sign(t *testing.T, s issuer.Signer, payload []byte) []byte {
	t.Helper()
	hdr := jws.NewHeaders()
	if err := hdr.Set(jws.KeyIDKey, s.KeyID()); err != nil {
		t.Fatalf("set kid: %v", err)
	}
	token, err := jws.Sign(payload, jws.WithKey(s.Algorithm(), s, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		t.Fatalf("jws.Sign: %v", err)
	}
	return token
}

// checkKeyType fails t unless pub is the kind of key alg uses.
func checkKeyType(t *testing.T, alg jwa.SignatureAlgorithm, pub crypto.PublicKey) {
	t.Helper()
	switch alg {
	case jwa.ES256():
		if k, ok := pub.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
			t.Fatalf("Public() = %T, want a P-256 *ecdsa.PublicKey", pub)
		}
	case jwa.EdDSA():
		if _, ok := pub.(ed25519.PublicKey); !ok {
			t.Fatalf("Public() = %T, want ed25519.PublicKey", pub)
		}
	case jwa.RS256():
		if k, ok := pub.(*rsa.PublicKey); !ok || k.N.BitLen() < issuer.MinRSABits {
			t.Fatalf("Public() = %T, want an *rsa.PublicKey of at least %d bits", pub, issuer.MinRSABits)
		}
	default:
		t.Fatalf("signertest: unsupported algorithm %q", alg)
	}
}

// rfc7638 computes the RFC 7638 thumbprint of pub through jwx, independently
// of the signer under test.
func rfc7638(t *testing.T, pub crypto.PublicKey) string {
	t.Helper()
	key, err := jwk.Import(pub)
	if err != nil {
		t.Fatalf("jwk.Import: %v", err)
	}
	sum, err := key.Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatalf("Thumbprint: %v", err)
	}
	return base64.RawURLEncoding.EncodeToString(sum)
}

// checkRawSignature checks the signature bytes with the standard library,
// so a signer returning the wrong encoding (say ASN.1 DER for ES256 instead
// of RFC 7518 §3.4 r||s) fails even if a lenient verifier accepted it.
func checkRawSignature(t *testing.T, alg jwa.SignatureAlgorithm, pub crypto.PublicKey, parts []string) {
	t.Helper()
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		t.Fatalf("decode signature: %v", err)
	}
	input := []byte(parts[0] + "." + parts[1])
	digest := sha256.Sum256(input)
	switch alg {
	case jwa.ES256():
		if len(sig) != 64 {
			t.Fatalf("ES256 signature is %d bytes, want 64 (r||s)", len(sig))
		}
		r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
		if !ecdsa.Verify(pub.(*ecdsa.PublicKey), digest[:], r, s) {
			t.Fatal("ES256 r||s signature does not verify with crypto/ecdsa")
		}
	case jwa.EdDSA():
		if !ed25519.Verify(pub.(ed25519.PublicKey), input, sig) {
			t.Fatal("EdDSA signature does not verify with crypto/ed25519")
		}
	case jwa.RS256():
		if err := rsa.VerifyPKCS1v15(pub.(*rsa.PublicKey), crypto.SHA256, digest[:], sig); err != nil {
			t.Fatalf("RS256 signature does not verify with crypto/rsa: %v", err)
		}
	}
}
