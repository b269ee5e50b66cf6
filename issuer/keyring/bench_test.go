package keyring_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/spiffe-sts/spiffe-sts/issuer/keyring"
	"github.com/spiffe-sts/spiffe-sts/issuer/keyring/filestore"
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

// BenchmarkRefresh measures a refresh (every refresh_interval) of a ring
// of four keys in a file store: read and parse the file, reuse the opened
// keys, plan.
func BenchmarkRefresh(b *testing.B) {
	store, err := filestore.Open(filepath.Join(b.TempDir(), filestore.FileName))
	if err != nil {
		b.Fatal(err)
	}
	keyringtest.BenchRefresh(b, baseConfig(store, keyringtest.NewClock().Now), 4)
}
