package keyring_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe-sts/spiffe-sts/issuer/keyring"
	"github.com/spiffe-sts/spiffe-sts/issuer/keyring/internal/keyringtest"
)

// writeDiskKey writes key as issuer/diskkey does: PKCS#8 PEM, mode 0600.
func writeDiskKey(t *testing.T, dir, name string, key crypto.Signer, mode os.FileMode) {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
}

func legacyDir(t *testing.T) (string, crypto.Signer, crypto.Signer) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), keyring.LegacyKeysDir)
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	writeDiskKey(t, dir, "es256.pem", ec, 0o600)
	writeDiskKey(t, dir, "eddsa.pem", ed, 0o600)
	if err := os.WriteFile(filepath.Join(dir, ".es256.pem.123.tmp"), []byte("leftover"), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, ec, ed
}

func TestImportLegacy(t *testing.T) {
	dir, ec, ed := legacyDir(t)
	before := map[string][]byte{}
	for _, n := range []string{"es256.pem", "eddsa.pem"} {
		before[n], _ = os.ReadFile(filepath.Join(dir, n))
	}
	legacy, err := keyring.ReadLegacyKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(legacy) != 2 {
		t.Fatalf("ReadLegacyKeys = %d keys, want 2", len(legacy))
	}
	clk := keyringtest.NewClock()
	store := &memStore{}
	cfg := baseConfig(store, clk.Now)
	cfg.KEK = keyringtest.NewKEK(t)
	cfg.Legacy = legacy
	m := newManager(t, cfg)

	ecKID, _ := keyringtest.KeyID(ec.Public())
	edKID, _ := keyringtest.KeyID(ed.Public())
	if got := activeKID(m); got != ecKID {
		t.Fatalf("Active = %s, want the legacy ES256 key %s", got, ecKID)
	}
	if got := published(m); len(got) != 2 || got[edKID] != keyring.StateRetired {
		t.Fatalf("Published = %v, want %s active and %s retired", got, ecKID, edKID)
	}
	// A second replica starting on the imported ring imports nothing.
	newManager(t, cfg)
	if n := len(store.records()); n != 2 {
		t.Fatalf("%d records after a second start, want 2", n)
	}
	// The retired legacy key goes after MaxTokenTTL + leeway.
	clk.Advance(time.Hour + time.Minute)
	refresh(t, m)
	if got := published(m); len(got) != 1 {
		t.Fatalf("Published = %v, want the legacy EdDSA key removed", got)
	}
	for n, b := range before {
		after, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil || !bytes.Equal(after, b) {
			t.Errorf("%s changed by the import", n)
		}
	}
}

func TestImportLegacyOtherAlgorithm(t *testing.T) {
	dir, ec, _ := legacyDir(t)
	legacy, err := keyring.ReadLegacyKeys(dir)
	if err != nil {
		t.Fatal(err)
	}
	clk := keyringtest.NewClock()
	cfg := baseConfig(&memStore{}, clk.Now)
	cfg.Algorithm = keyring.RS256
	cfg.Legacy = legacy
	m := newManager(t, cfg)
	if _, _, alg := m.Active(); alg != keyring.RS256 {
		t.Fatalf("Active alg = %s, want a new RS256 key", alg)
	}
	ecKID, _ := keyringtest.KeyID(ec.Public())
	if got := published(m); len(got) != 3 || got[ecKID] != keyring.StateRetired {
		t.Fatalf("Published = %v, want the new key active and both legacy keys retired", got)
	}
}

func TestReadLegacyKeysRefuses(t *testing.T) {
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, dir string)
		want  string // after "keyring: DIR/"
	}{
		{name: "group readable", setup: func(t *testing.T, dir string) { writeDiskKey(t, dir, "es256.pem", ec, 0o640) }, want: "es256.pem: mode 0640 gives group or others access; want 0600"},
		{name: "unknown name", setup: func(t *testing.T, dir string) { writeDiskKey(t, dir, "hs256.pem", ec, 0o600) }, want: "hs256.pem: file name names no supported algorithm (want es256.pem, eddsa.pem or rs256.pem)"},
		{name: "wrong key type", setup: func(t *testing.T, dir string) { writeDiskKey(t, dir, "eddsa.pem", ec, 0o600) }, want: "eddsa.pem: an ECDSA P-256 key cannot sign EdDSA"},
		{name: "not PEM", setup: func(t *testing.T, dir string) {
			if err := os.WriteFile(filepath.Join(dir, "es256.pem"), []byte("junk"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, want: "es256.pem: no PEM block"},
		{name: "symlink", setup: func(t *testing.T, dir string) {
			writeDiskKey(t, dir, "real", ec, 0o600)
			if err := os.Symlink(filepath.Join(dir, "real"), filepath.Join(dir, "es256.pem")); err != nil {
				t.Fatal(err)
			}
		}, want: "es256.pem: not a regular file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.setup(t, dir)
			_, err := keyring.ReadLegacyKeys(dir)
			if want := "keyring: " + dir + "/" + tc.want; err == nil || err.Error() != want {
				t.Fatalf("ReadLegacyKeys = %v, want %q", err, want)
			}
		})
	}
	keys, err := keyring.ReadLegacyKeys(filepath.Join(t.TempDir(), "absent"))
	if err != nil || keys != nil {
		t.Fatalf("ReadLegacyKeys(missing dir) = %v, %v; want none", keys, err)
	}
}
