package issuer_test

import (
	"context"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"

	"github.com/spiffe-sts/spiffe-sts/issuer"
)

// BenchmarkMint measures Mint with an ES256 key, and with EdDSA and RS256
// keys in sub-benchmarks.
func BenchmarkMint(b *testing.B) {
	bench := func(b *testing.B, alg jwa.SignatureAlgorithm) {
		iss, err := issuer.New(issuer.Config{
			IssuerURL: testIssuerURL,
			Keys:      staticKeys(b, testSigner(b, alg)),
			Clock:     fixedClock,
		})
		if err != nil {
			b.Fatal(err)
		}
		benchMint(b, iss)
	}
	for _, alg := range []jwa.SignatureAlgorithm{jwa.ES256(), jwa.EdDSA(), jwa.RS256()} {
		b.Run(alg.String(), func(b *testing.B) { bench(b, alg) })
	}
}

// benchMint mints baseClaims bound to a fresh leaf with iss, b.N times.
func benchMint(b *testing.B, iss *issuer.Issuer) {
	leaf := newLeaf(b, testNow.Add(time.Hour))
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		claims := baseClaims()
		if _, err := iss.Mint(ctx, &claims, leaf, 0); err != nil {
			b.Fatal(err)
		}
	}
}
