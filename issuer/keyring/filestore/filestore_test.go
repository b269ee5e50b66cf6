package filestore_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe-sts/spiffe-sts/issuer/keyring"
	"github.com/spiffe-sts/spiffe-sts/issuer/keyring/filestore"
	"github.com/spiffe-sts/spiffe-sts/issuer/keyring/internal/keyringtest"
	"github.com/spiffe-sts/spiffe-sts/issuer/keyring/storetest"
)

func open(t *testing.T, path string) *filestore.Store {
	t.Helper()
	s, err := filestore.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) (keyring.Store, func(t *testing.T) keyring.Store) {
		path := filepath.Join(t.TempDir(), "data", filestore.FileName)
		return open(t, path), func(t *testing.T) keyring.Store { return open(t, path) }
	})
}

func TestFileMode(t *testing.T) {
	path := filepath.Join(t.TempDir(), filestore.FileName)
	s := open(t, path)
	r := keyring.Record{Seq: 1, KeyID: "k", Algorithm: keyring.ES256, Created: time.Unix(1, 0), Activate: time.Unix(2, 0), SealedKey: []byte("x")}
	if err := s.Insert(context.Background(), r); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("mode = %#o, want 0600", perm)
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".tmp") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
}

func TestRefuses(t *testing.T) {
	for _, tc := range []struct {
		name    string
		data    string
		mode    os.FileMode
		wantErr string // after the path
	}{
		{name: "group readable", data: `{"version":1,"keys":[]}`, mode: 0o640, wantErr: ": mode 0640 gives group or others access; want 0600"},
		{name: "not JSON", data: `PRIVATE KEY`, mode: 0o600, wantErr: ": not a key ring file: invalid character 'P' looking for beginning of value"},
		{name: "other version", data: `{"version":2,"keys":[]}`, mode: 0o600, wantErr: ": format version 2, want 1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), filestore.FileName)
			if err := os.WriteFile(path, []byte(tc.data), tc.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tc.mode); err != nil {
				t.Fatal(err)
			}
			_, err := filestore.Open(path)
			if want := "filestore: " + path + tc.wantErr; err == nil || err.Error() != want {
				t.Fatalf("Open error = %v, want %q", err, want)
			}
			after, _ := os.ReadFile(path)
			if string(after) != tc.data {
				t.Error("Open changed the file it refused")
			}
		})
	}
}

// TestRefusesOtherOwner checks that a ring file owned by another user is
// refused, naming the file and both uids, and left as it is. It needs to
// be able to give the file away (root).
func TestRefusesOtherOwner(t *testing.T) {
	path := filepath.Join(t.TempDir(), filestore.FileName)
	const data = `{"version":1,"keys":[]}`
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	const other = 65534
	if os.Geteuid() == other {
		t.Skip("running as uid 65534")
	}
	if err := os.Chown(path, other, other); err != nil {
		t.Skipf("cannot give the file to another owner: %v", err)
	}
	_, err := filestore.Open(path)
	want := fmt.Sprintf("filestore: %s: owned by uid %d; want %d, the uid spiffe-sts runs as", path, other, os.Geteuid())
	if err == nil || err.Error() != want {
		t.Fatalf("Open error = %v, want %q", err, want)
	}
	if after, _ := os.ReadFile(path); string(after) != data {
		t.Error("Open changed the file it refused")
	}
}

// TestManager runs the ring on the file store without a key-encryption
// key: the file holds plain PKCS#8, readable by its owner only, and a
// second process on the same file adopts the same keys.
func TestManager(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), filestore.FileName)
	cfg := keyring.Config{
		Store:     open(t, path),
		KeyID:     keyringtest.KeyID,
		Algorithm: keyring.EdDSA,
		Schedule:  keyring.Schedule{MaxTokenTTL: time.Hour},
		Clock:     keyringtest.NewClock().Now,
	}
	m, err := keyring.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	info, err := m.Rotate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Store = open(t, path)
	m2, err := keyring.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, k1, _ := m.Active()
	_, k2, _ := m2.Active()
	if k1 != k2 || len(m2.Published()) != 2 || m2.Published()[1].KeyID != info.KeyID {
		t.Fatalf("second process sees %s and %+v, want %s and the rotated key %s", k2, m2.Published(), k1, info.KeyID)
	}
}
