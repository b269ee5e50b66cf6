//go:build integration

package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/spiffe-sts/spiffe-sts/integration/harness"
	"github.com/spiffe-sts/spiffe-sts/internal/pgtest"
	"github.com/spiffe-sts/spiffe-sts/issuer/keyring/filestore"
	"github.com/spiffe-sts/spiffe-sts/issuer/keyring/pgstore"
)

// fileState is what must not change in a key file that start-up refuses.
type fileState struct {
	sum   [sha256.Size]byte
	mode  os.FileMode
	mtime time.Time
	uid   uint32
}

func stateOf(t *testing.T, path string) fileState {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fileState{sum: sha256.Sum256(b), mode: fi.Mode(), mtime: fi.ModTime(), uid: fileUID(fi)}
}

// TestFaultBadKeyMaterial starts the real spiffe-sts binary on key
// material that is corrupt or wrongly permissioned: start-up refuses
// with an error naming the file, and the file is byte-for-byte
// unchanged afterwards (hash, mode, mtime, owner).
//
//  1. Start spiffe-sts once with a key-encryption key to get a valid
//     sealed ring file; stop it.
//  2. For each case, a fresh data dir with a copy of that file (or KEK)
//     spoilt one way; start-up must fail naming the file, and the file
//     must be as it was.
func TestFaultBadKeyMaterial(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	kek := make([]byte, 32)
	if _, err := rand.Read(kek); err != nil {
		t.Fatal(err)
	}
	writeKEK := func(dir string, b []byte) string {
		path := filepath.Join(dir, "kek")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	datastore := func(kekFile string) string {
		return "datastore \"embedded\" {\n  key_encryption_key_file = \"" + kekFile + "\"\n}\n"
	}

	// 1.
	goodDir := t.TempDir()
	goodKEK := writeKEK(t.TempDir(), kek)
	good, err := harness.StartSTS(t.Context(), e.spire, harness.STSOptions{
		Bin: e.stsBin, DataDir: goodDir, Dir: t.TempDir(), Policy: policyRule, ExtraHCL: datastore(goodKEK),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := good.StopGracefully(t.Context()); err != nil {
		t.Fatal(err)
	}
	ring, err := os.ReadFile(filepath.Join(goodDir, filestore.FileName))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(ring, []byte("PRIVATE KEY")) {
		t.Fatal("the ring file holds a plain private key")
	}

	// 2.
	otherKEK := make([]byte, 32)
	if _, err := rand.Read(otherKEK); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		// spoil prepares dataDir (holding a copy of the good ring file,
		// mode 0600) and kekDir and returns the file that must stay
		// unchanged and the KEK file to configure.
		spoil func(t *testing.T, ringFile, kekDir string) (watched, kekFile string)
		// expectErr are substrings of the start-up error; FILE is watched.
		expectErr []string
	}{
		{
			name: "ring file not JSON",
			spoil: func(t *testing.T, ringFile, kekDir string) (string, string) {
				mustWrite(t, ringFile, []byte("{not json"), 0o600)
				return ringFile, writeKEK(kekDir, kek)
			},
			expectErr: []string{"FILE: not a key ring file"},
		},
		{
			name: "sealed key corrupt",
			spoil: func(t *testing.T, ringFile, kekDir string) (string, string) {
				mustWrite(t, ringFile, flipSealedKey(t, ring), 0o600)
				return ringFile, writeKEK(kekDir, kek)
			},
			expectErr: []string{"FILE", "does not decrypt"},
		},
		{
			name: "ring file mode 0644",
			spoil: func(t *testing.T, ringFile, kekDir string) (string, string) {
				mustWrite(t, ringFile, ring, 0o644)
				return ringFile, writeKEK(kekDir, kek)
			},
			expectErr: []string{"FILE: mode 0644 gives group or others access; want 0600"},
		},
		{
			name: "ring file of another owner",
			spoil: func(t *testing.T, ringFile, kekDir string) (string, string) {
				mustWrite(t, ringFile, ring, 0o600)
				if err := os.Chown(ringFile, 65534, 65534); err != nil {
					t.Skipf("cannot give the file to another owner: %v", err)
				}
				return ringFile, writeKEK(kekDir, kek)
			},
			expectErr: []string{"FILE: owned by uid 65534"},
		},
		{
			name: "KEK of another ring",
			spoil: func(t *testing.T, ringFile, kekDir string) (string, string) {
				mustWrite(t, ringFile, ring, 0o600)
				return ringFile, writeKEK(kekDir, otherKEK)
			},
			expectErr: []string{"FILE", "does not decrypt under the key-encryption key"},
		},
		{
			name: "KEK file malformed",
			spoil: func(t *testing.T, ringFile, kekDir string) (string, string) {
				mustWrite(t, ringFile, ring, 0o600)
				k := writeKEK(kekDir, []byte("short"))
				return k, k
			},
			expectErr: []string{"FILE: seal: key-encryption key is neither 32 raw bytes nor base64"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dataDir := t.TempDir()
			ringFile := filepath.Join(dataDir, filestore.FileName)
			watched, kekFile := tt.spoil(t, ringFile, t.TempDir())
			other := ringFile
			if watched == ringFile {
				other = kekFile
			}
			before, beforeOther := stateOf(t, watched), stateOf(t, other)
			_, err := harness.StartSTS(t.Context(), e.spire, harness.STSOptions{
				Bin: e.stsBin, DataDir: dataDir, Dir: t.TempDir(), Policy: policyRule, ExtraHCL: datastore(kekFile),
			})
			if err == nil {
				t.Fatal("spiffe-sts started")
			}
			for _, want := range tt.expectErr {
				if want = strings.ReplaceAll(want, "FILE", watched); !strings.Contains(err.Error(), want) {
					t.Errorf("start-up error does not say %q:\n%v", want, err)
				}
			}
			if after := stateOf(t, watched); after != before {
				t.Errorf("%s changed: %+v, was %+v", watched, after, before)
			}
			if after := stateOf(t, other); after != beforeOther {
				t.Errorf("%s changed: %+v, was %+v", other, after, beforeOther)
			}
		})
	}
}

func mustWrite(t *testing.T, path string, b []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, b, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // WriteFile's mode is subject to the umask
		t.Fatal(err)
	}
}

// flipSealedKey returns the ring file with one bit of the first key's
// sealed private key flipped.
func flipSealedKey(t *testing.T, ring []byte) []byte {
	t.Helper()
	var f map[string]any
	if err := json.Unmarshal(ring, &f); err != nil {
		t.Fatal(err)
	}
	k := f["keys"].([]any)[0].(map[string]any)
	sealed, err := base64.StdEncoding.DecodeString(k["key"].(string))
	if err != nil {
		t.Fatal(err)
	}
	sealed[len(sealed)/2] ^= 1
	k["key"] = base64.StdEncoding.EncodeToString(sealed)
	b, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestFaultBadKeyMaterialPostgres is TestFaultBadKeyMaterial for the
// PostgreSQL key store, on a real PostgreSQL: a ring row whose sealed key
// is corrupt, and a KEK that is not the ring's. Start-up fails naming the
// table and the record, and the table is unchanged afterwards.
func TestFaultBadKeyMaterialPostgres(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	pg := pgtest.Start(t)
	kekDir := t.TempDir()
	kek, otherKEK := make([]byte, 32), make([]byte, 32)
	for _, b := range [][]byte{kek, otherKEK} {
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
	}
	kekFile, otherKEKFile := filepath.Join(kekDir, "kek"), filepath.Join(kekDir, "other-kek")
	mustWrite(t, kekFile, kek, 0o600)
	mustWrite(t, otherKEKFile, otherKEK, 0o600)
	datastore := func(dsn, kekFile string) string {
		return fmt.Sprintf("datastore \"postgres\" {\n  connection_string = %q\n  key_encryption_key_file = %q\n}\n", dsn, kekFile)
	}
	start := func(dsn, kekFile string) error {
		s, err := harness.StartSTS(t.Context(), e.spire, harness.STSOptions{
			Bin: e.stsBin, DataDir: t.TempDir(), Dir: t.TempDir(), Policy: policyRule, ExtraHCL: datastore(dsn, kekFile),
		})
		if err == nil {
			_ = s.StopGracefully(t.Context())
		}
		return err
	}

	tests := []struct {
		name string
		// spoil changes the ring in db (created by a first start-up) and
		// returns the KEK file to start with.
		spoil     func(t *testing.T, db *pgx.Conn) string
		expectErr []string
	}{
		{
			name: "sealed key corrupt",
			spoil: func(t *testing.T, db *pgx.Conn) string {
				// Flip one bit in the middle of the first key's sealed key.
				if _, err := db.Exec(t.Context(), `UPDATE `+pgstore.KeysTable+` SET sealed_key =
					set_byte(sealed_key, length(sealed_key)/2, get_byte(sealed_key, length(sealed_key)/2) # 1)
					WHERE seq = (SELECT min(seq) FROM `+pgstore.KeysTable+`)`); err != nil {
					t.Fatal(err)
				}
				return kekFile
			},
			expectErr: []string{`datastore "postgres": table ` + pgstore.KeysTable, "does not decrypt"},
		},
		{
			name:      "KEK of another ring",
			spoil:     func(*testing.T, *pgx.Conn) string { return otherKEKFile },
			expectErr: []string{`datastore "postgres": table ` + pgstore.KeysTable, "does not decrypt under the key-encryption key"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dsn := pg.NewDatabase(t)
			if err := start(dsn, kekFile); err != nil {
				t.Fatalf("first start-up on an empty database: %v", err)
			}
			db, err := pgx.Connect(t.Context(), dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close(context.Background())
			kf := tt.spoil(t, db)
			before := tableDump(t, db)
			err = start(dsn, kf)
			if err == nil {
				t.Fatal("spiffe-sts started")
			}
			for _, want := range tt.expectErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("start-up error does not say %q:\n%v", want, err)
				}
			}
			if !strings.Contains(err.Error(), "kid") && !strings.Contains(err.Error(), "seq") {
				t.Errorf("start-up error names no record (seq or kid):\n%v", err)
			}
			if after := tableDump(t, db); after != before {
				t.Errorf("the key table changed:\n%s\nwas\n%s", after, before)
			}
		})
	}
}

// tableDump is every row of the key table, in order, as text.
func tableDump(t *testing.T, db *pgx.Conn) string {
	t.Helper()
	rows, err := db.Query(t.Context(), `SELECT seq, kid, alg, created, activate, revoked, encode(sealed_key, 'hex') FROM `+pgstore.KeysTable+` ORDER BY seq`)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintln(&b, vals...)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if b.Len() == 0 {
		t.Fatal("the key table is empty")
	}
	return b.String()
}
