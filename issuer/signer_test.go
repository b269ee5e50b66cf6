package issuer_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"testing"

	"github.com/lestrrat-go/jwx/v3/jwa"

	"github.com/spiffe-sts/spiffe-sts/issuer"
	"github.com/spiffe-sts/spiffe-sts/issuer/signertest"
)

func TestGenerateSigner(t *testing.T) {
	for _, alg := range []jwa.SignatureAlgorithm{jwa.ES256(), jwa.EdDSA(), jwa.RS256()} {
		t.Run(alg.String(), func(t *testing.T) {
			signertest.Run(t, alg, func(t *testing.T) issuer.Signer {
				if alg == jwa.RS256() {
					return testSigner(t, alg) // RSA key generation is slow
				}
				s, err := issuer.GenerateSigner(alg)
				if err != nil {
					t.Fatalf("GenerateSigner: %v", err)
				}
				return s
			})
		})
	}
}

func TestGenerateSignerUnsupported(t *testing.T) {
	_, err := issuer.GenerateSigner(jwa.ES384())
	const want = `issuer: unsupported signature algorithm "ES384" (want ES256, EdDSA or RS256)`
	if err == nil || err.Error() != want {
		t.Fatalf("GenerateSigner(ES384) error = %v, want %q", err, want)
	}
}

func TestNewSigner(t *testing.T) {
	p256 := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	p384 := must(ecdsa.GenerateKey(elliptic.P384(), rand.Reader))
	_, ed := must2(ed25519.GenerateKey(rand.Reader))
	rsa2048 := must(rsa.GenerateKey(rand.Reader, 2048))
	rsa1024 := must(rsa.GenerateKey(rand.Reader, 1024))

	type params struct {
		key crypto.Signer
		alg jwa.SignatureAlgorithm
	}
	for _, tt := range []struct {
		name           string
		overrideParams func(*params)
		expectErr      string
	}{
		{name: "baseline ES256"},
		{
			name:           "EdDSA",
			overrideParams: func(p *params) { p.key, p.alg = ed, jwa.EdDSA() },
		},
		{
			name:           "RS256",
			overrideParams: func(p *params) { p.key, p.alg = rsa2048, jwa.RS256() },
		},
		{
			name:           "nil key",
			overrideParams: func(p *params) { p.key = nil },
			expectErr:      "issuer: key is nil",
		},
		{
			name:           "unsupported algorithm",
			overrideParams: func(p *params) { p.alg = jwa.ES384() },
			expectErr:      `issuer: unsupported signature algorithm "ES384" (want ES256, EdDSA or RS256)`,
		},
		{
			name:           "ES256 with P-384",
			overrideParams: func(p *params) { p.key = p384 },
			expectErr:      "issuer: ES256 needs a P-256 ECDSA key, got ECDSA P-384",
		},
		{
			name:           "ES256 with RSA",
			overrideParams: func(p *params) { p.key = rsa2048 },
			expectErr:      "issuer: ES256 needs a P-256 ECDSA key, got RSA-2048",
		},
		{
			name:           "EdDSA with ECDSA",
			overrideParams: func(p *params) { p.alg = jwa.EdDSA() },
			expectErr:      "issuer: EdDSA needs an Ed25519 key, got ECDSA P-256",
		},
		{
			name:           "RS256 with Ed25519",
			overrideParams: func(p *params) { p.key, p.alg = ed, jwa.RS256() },
			expectErr:      "issuer: RS256 needs an RSA key of at least 2048 bits, got Ed25519",
		},
		{
			name:           "RS256 with RSA-1024",
			overrideParams: func(p *params) { p.key, p.alg = rsa1024, jwa.RS256() },
			expectErr:      "issuer: RS256 needs an RSA key of at least 2048 bits, got RSA-1024",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := params{key: p256, alg: jwa.ES256()}
			if tt.overrideParams != nil {
				tt.overrideParams(&p)
			}
			s, err := issuer.NewSigner(p.key, p.alg)
			if tt.expectErr != "" {
				if err == nil || err.Error() != tt.expectErr {
					t.Fatalf("NewSigner error = %v, want %q", err, tt.expectErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewSigner: %v", err)
			}
			signertest.Run(t, p.alg, func(*testing.T) issuer.Signer { return s })
		})
	}
}

func TestParseAlgorithm(t *testing.T) {
	for _, tt := range []struct {
		in        string
		want      jwa.SignatureAlgorithm
		expectErr string
	}{
		{in: "ES256", want: jwa.ES256()},
		{in: "EdDSA", want: jwa.EdDSA()},
		{in: "RS256", want: jwa.RS256()},
		{in: "es256", expectErr: `issuer: unsupported signature algorithm "es256" (want ES256, EdDSA or RS256)`},
		{in: "HS256", expectErr: `issuer: unsupported signature algorithm "HS256" (want ES256, EdDSA or RS256)`},
		{in: "none", expectErr: `issuer: unsupported signature algorithm "none" (want ES256, EdDSA or RS256)`},
		{in: "", expectErr: `issuer: unsupported signature algorithm "" (want ES256, EdDSA or RS256)`},
	} {
		t.Run(tt.in, func(t *testing.T) {
			got, err := issuer.ParseAlgorithm(tt.in)
			if tt.expectErr != "" {
				if err == nil || err.Error() != tt.expectErr {
					t.Fatalf("ParseAlgorithm(%q) error = %v, want %q", tt.in, err, tt.expectErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseAlgorithm(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

func must2[A, B any](a A, b B, err error) (A, B) {
	if err != nil {
		panic(err)
	}
	return a, b
}
