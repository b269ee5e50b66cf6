package accesstoken_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/internal/testca"
)

// benchFixture returns a token minted like spiffe-sts mints them (ES256,
// one audience, scopes), the certificate it is bound to and its key set.
func benchFixture(b testing.TB) (string, *accesstoken.StaticKeySet, *x509.Certificate) {
	b.Helper()
	ca := testca.New(b, "example.org")
	leaf := ca.SVID(b, subject, time.Hour).Certificates[0]
	key := newKeyPair(b, "k1")
	raw := key.sign(b, accesstoken.Type, accesstoken.Claims{
		Issuer: issuerURL, Subject: subject, Audience: accesstoken.Audience{audience},
		Expiry: time.Now().Add(time.Hour).Unix(), IssuedAt: time.Now().Unix(), NotBefore: time.Now().Unix(),
		JWTID: "Zm9vYmFyYmF6cXV4cXV1eA", ClientID: subject, Scope: "read write",
		Confirmation: accesstoken.Confirmation{X5TS256: accesstoken.Thumbprint(leaf)},
	})
	return raw, key.publicSet(b, jwa.ES256()), leaf
}

// BenchmarkVerifyCold verifies a token with the cache disabled, so every
// call checks the signature and decodes the claims.
func BenchmarkVerifyCold(b *testing.B) {
	raw, keys, leaf := benchFixture(b)
	v := accesstoken.NewVerifier(issuerURL, keys, &accesstoken.Config{Audiences: []string{audience}, CacheSize: -1})
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(ctx, raw, leaf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyCached verifies the same token on the same connection
// again and again: every call after the first is a cache hit, which still
// checks expiry and binding.
func BenchmarkVerifyCached(b *testing.B) { benchVerifyCached(b, nil) }

// benchVerifyCached is BenchmarkVerifyCached with Metrics m (none when
// nil).
func benchVerifyCached(b *testing.B, m *accesstoken.Metrics) {
	raw, keys, leaf := benchFixture(b)
	v := accesstoken.NewVerifier(issuerURL, keys, &accesstoken.Config{Audiences: []string{audience}, Metrics: m})
	ctx := context.Background()
	if _, err := v.Verify(ctx, raw, leaf); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(ctx, raw, leaf); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyCachedNewConnection is a cache hit on another connection
// of the same workload: the same certificate in another
// *x509.Certificate, so the hit hashes it to check the binding.
func BenchmarkVerifyCachedNewConnection(b *testing.B) {
	raw, keys, leaf := benchFixture(b)
	v := accesstoken.NewVerifier(issuerURL, keys, &accesstoken.Config{Audiences: []string{audience}})
	ctx := context.Background()
	if _, err := v.Verify(ctx, raw, leaf); err != nil {
		b.Fatal(err)
	}
	again := reparse(b, leaf)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(ctx, raw, again); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkES256Baseline is the bare ECDSA P-256 check of the token's
// signature, the floor under BenchmarkVerifyCold on this machine.
func BenchmarkES256Baseline(b *testing.B) {
	key := newKeyPair(b, "k1")
	raw := key.sign(b, accesstoken.Type, accesstoken.Claims{Issuer: issuerURL, Subject: subject})
	dot := strings.LastIndexByte(raw, '.')
	sig, err := base64.RawURLEncoding.DecodeString(raw[dot+1:])
	if err != nil {
		b.Fatal(err)
	}
	r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
	b.ReportAllocs()
	for b.Loop() {
		digest := sha256.Sum256([]byte(raw[:dot]))
		if !ecdsa.Verify(&key.priv.PublicKey, digest[:], r, s) {
			b.Fatal("signature does not verify")
		}
	}
}
