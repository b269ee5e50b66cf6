package keyring_test

import (
	"context"
	"testing"

	"github.com/spiffe-sts/spiffe-sts/issuer/keyring"
	"github.com/spiffe-sts/spiffe-sts/issuer/keyring/internal/keyringtest"
)

// BenchmarkActive measures the signing hot path's key lookup: a pointer
// load, a clock read and a scan of the ring in memory.
func BenchmarkActive(b *testing.B) {
	clk := keyringtest.NewClock()
	m, err := keyring.New(context.Background(), baseConfig(&memStore{}, clk.Now))
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if s, _, _ := m.Active(); s == nil {
			b.Fatal("no active key")
		}
	}
}
