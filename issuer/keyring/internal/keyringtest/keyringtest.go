package keyringtest

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"testing"
	"time"

	"github.com/spiffe-sts/spiffe-sts/internal/fakeclock"
	"github.com/spiffe-sts/spiffe-sts/issuer/keyring"
	"github.com/spiffe-sts/spiffe-sts/issuer/keyring/seal"
)

// T0 is the time the keyring tests start at.
var T0 = time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)

// NewClock returns a fake clock at T0.
func NewClock() *fakeclock.Clock { return fakeclock.New(T0) }

// KeyID stands in for the RFC 7638 thumbprint of keyring.Config.KeyID:
// any stable function of the public key serves the ring. It is the
// SHA-256 of the key's PKIX encoding, unpadded base64url.
func KeyID(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(der)
	return base64.RawURLEncoding.EncodeToString(sum[:]), nil
}

// NewKEK returns a random key-encryption key, or fails the test.
func NewKEK(tb testing.TB) *seal.KEK {
	tb.Helper()
	b := make([]byte, seal.KEKSize)
	if _, err := rand.Read(b); err != nil {
		tb.Fatal(err)
	}
	k, err := seal.NewKEK(b)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

// BenchRefresh measures Manager.Refresh, the work a replica does every
// refresh interval, on a ring of n keys in cfg.Store: it starts a Manager
// on cfg, forces rotations until the ring holds n keys, then refreshes
// the unchanged ring b.N times.
func BenchRefresh(b *testing.B, cfg keyring.Config, n int) {
	b.Helper()
	ctx := context.Background()
	m, err := keyring.New(ctx, cfg)
	if err != nil {
		b.Fatalf("New: %v", err)
	}
	for len(m.Keys()) < n {
		if _, err := m.Rotate(ctx); err != nil {
			b.Fatalf("Rotate: %v", err)
		}
	}
	if got := len(m.Published()); got != n {
		b.Fatalf("%d published keys, want %d: %+v", got, n, m.Keys())
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := m.Refresh(ctx); err != nil {
			b.Fatalf("Refresh: %v", err)
		}
	}
}
