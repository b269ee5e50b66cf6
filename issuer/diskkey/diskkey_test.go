package diskkey_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/lestrrat-go/jwx/v3/jwa"

	"github.com/spiffe-sts/spiffe-sts/issuer"
	"github.com/spiffe-sts/spiffe-sts/issuer/diskkey"
	"github.com/spiffe-sts/spiffe-sts/issuer/signertest"
)

var algs = []jwa.SignatureAlgorithm{jwa.ES256(), jwa.EdDSA(), jwa.RS256()}

func open(t *testing.T, dir string, alg jwa.SignatureAlgorithm) issuer.Signer {
	t.Helper()
	s, _, err := diskkey.Open(dir, alg)
	if err != nil {
		t.Fatalf("Open(%s): %v", alg, err)
	}
	return s
}

func TestOpenConformance(t *testing.T) {
	for _, alg := range algs {
		t.Run(alg.String(), func(t *testing.T) {
			t.Run("created", func(t *testing.T) {
				signertest.Run(t, alg, func(t *testing.T) issuer.Signer {
					return open(t, t.TempDir(), alg)
				})
			})
			t.Run("reopened", func(t *testing.T) {
				dir := t.TempDir()
				first := open(t, dir, alg)
				signertest.Run(t, alg, func(t *testing.T) issuer.Signer {
					s := open(t, dir, alg)
					if s.KeyID() != first.KeyID() {
						t.Fatalf("reopened kid %q, want %q", s.KeyID(), first.KeyID())
					}
					return s
				})
			})
		})
	}
}

func TestOpenCreatesAndReopens(t *testing.T) {
	for _, alg := range algs {
		t.Run(alg.String(), func(t *testing.T) {
			dir := t.TempDir()
			s1, extra, err := diskkey.Open(dir, alg)
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if len(extra) != 0 {
				t.Errorf("first Open returned %d verification keys, want 0", len(extra))
			}
			keysDir := filepath.Join(dir, "keys")
			checkMode(t, keysDir, 0o700|os.ModeDir)
			path := filepath.Join(keysDir, diskkey.FileName(alg))
			checkMode(t, path, 0o600)
			entries, _ := os.ReadDir(keysDir)
			if len(entries) != 1 {
				t.Errorf("keys dir holds %d entries, want only %s (temp file left?)", len(entries), diskkey.FileName(alg))
			}
			data := mustRead(t, path)
			block, _ := pem.Decode(data)
			if block == nil || block.Type != "PRIVATE KEY" {
				t.Fatalf("%s is not a PRIVATE KEY PEM file", path)
			}
			if _, err := x509.ParsePKCS8PrivateKey(block.Bytes); err != nil {
				t.Fatalf("%s is not PKCS#8: %v", path, err)
			}

			s2, _, err := diskkey.Open(dir, alg)
			if err != nil {
				t.Fatalf("reopen: %v", err)
			}
			if s2.KeyID() != s1.KeyID() {
				t.Errorf("reopened kid %q, want %q", s2.KeyID(), s1.KeyID())
			}
			if !bytes.Equal(mustRead(t, path), data) {
				t.Error("reopening changed the key file")
			}
		})
	}
}

// TestOpenVerificationKeys checks that keys of other algorithms are loaded
// and returned as public JWKs, without the signer's own.
func TestOpenVerificationKeys(t *testing.T) {
	dir := t.TempDir()
	es := open(t, dir, jwa.ES256())
	ed := open(t, dir, jwa.EdDSA())

	s, extra, err := diskkey.Open(dir, jwa.ES256())
	if err != nil {
		t.Fatal(err)
	}
	if s.KeyID() != es.KeyID() {
		t.Errorf("signer kid %q, want %q", s.KeyID(), es.KeyID())
	}
	if len(extra) != 1 || keyID(extra[0]) != ed.KeyID() || keyAlg(extra[0]) != jwa.EdDSA().String() {
		t.Fatalf("verification keys = %v, want the EdDSA key %q", extra, ed.KeyID())
	}
	if _, err := extra[0].PublicKey(); err != nil {
		t.Fatal(err)
	}
	if priv, err := isPrivate(extra[0]); err != nil || priv {
		t.Fatal("verification key holds private material")
	}

	// They plug into issuer.Config.
	iss, err := issuer.New(issuer.Config{IssuerURL: "https://sts.example.org", Signer: s, VerificationKeys: extra})
	if err != nil {
		t.Fatalf("issuer.New: %v", err)
	}
	if iss.KeySet().Len() != 2 {
		t.Errorf("KeySet().Len() = %d, want 2", iss.KeySet().Len())
	}
}

func TestOpenErrors(t *testing.T) {
	ecKey := pkcs8PEM(t)

	type params struct {
		alg jwa.SignatureAlgorithm
		// files to create in dir/keys before Open, with their modes.
		files map[string]file
	}
	for _, tt := range []struct {
		name           string
		overrideParams func(p *params)
		// expectErr is the error text; %s stands for dir/keys.
		expectErr string
		// expectStdlibErr, when set, is the standard-library error that
		// expectErr is followed by; it is matched with errors.As.
		expectStdlibErr any
	}{
		{
			name: "baseline",
		},
		{
			name:           "unknown algorithm",
			overrideParams: func(p *params) { p.alg = jwa.HS256() },
			expectErr:      `diskkey: issuer: unsupported signature algorithm "HS256" (want ES256, EdDSA or RS256)`,
		},
		{
			name:           "non-.pem files are ignored",
			overrideParams: func(p *params) { p.files["README"] = file{[]byte("not a key"), 0o644} },
		},
		{
			name:           "leftover temporary file is ignored",
			overrideParams: func(p *params) { p.files[".es256.pem.123.tmp"] = file{[]byte("partial"), 0o600} },
		},
		{
			name:           "not PEM",
			overrideParams: func(p *params) { p.files["es256.pem"] = file{[]byte("garbage\n"), 0o600} },
			expectErr:      "diskkey: %s/es256.pem: no PEM block",
		},
		{
			name:           "empty file",
			overrideParams: func(p *params) { p.files["es256.pem"] = file{nil, 0o600} },
			expectErr:      "diskkey: %s/es256.pem: no PEM block",
		},
		{
			name: "wrong PEM type",
			overrideParams: func(p *params) {
				p.files["es256.pem"] = file{pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: []byte{1}}), 0o600}
			},
			expectErr: `diskkey: %s/es256.pem: PEM block is "EC PRIVATE KEY", want "PRIVATE KEY"`,
		},
		{
			name: "not PKCS#8",
			overrideParams: func(p *params) {
				p.files["es256.pem"] = file{pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("junk")}), 0o600}
			},
			expectErr:       "diskkey: %s/es256.pem: not a PKCS#8 private key: ",
			expectStdlibErr: new(asn1.StructuralError),
		},
		{
			name: "data after the PEM block",
			overrideParams: func(p *params) {
				p.files["es256.pem"] = file{append(slices.Clone(ecKey), "extra"...), 0o600}
			},
			expectErr: "diskkey: %s/es256.pem: data after the PEM block",
		},
		{
			name:           "world-readable",
			overrideParams: func(p *params) { p.files["es256.pem"] = file{ecKey, 0o604} },
			expectErr:      "diskkey: %s/es256.pem: mode 0604 gives group or others access; want 0600",
		},
		{
			name:           "group-readable",
			overrideParams: func(p *params) { p.files["es256.pem"] = file{ecKey, 0o640} },
			expectErr:      "diskkey: %s/es256.pem: mode 0640 gives group or others access; want 0600",
		},
		{
			name:           "wrong key type for the name",
			overrideParams: func(p *params) { p.files["eddsa.pem"] = file{ecKey, 0o600} },
			expectErr:      "diskkey: %s/eddsa.pem: issuer: EdDSA needs an Ed25519 key, got ECDSA P-256",
		},
		{
			name:           "bad file for another algorithm also stops Open",
			overrideParams: func(p *params) { p.files["rs256.pem"] = file{[]byte("garbage"), 0o600} },
			expectErr:      "diskkey: %s/rs256.pem: no PEM block",
		},
		{
			name:           "unknown key file name",
			overrideParams: func(p *params) { p.files["es384.pem"] = file{ecKey, 0o600} },
			expectErr:      "diskkey: %s/es384.pem: file name names no supported algorithm (want es256.pem, eddsa.pem or rs256.pem)",
		},
		{
			name:           "unreadable",
			overrideParams: func(p *params) { p.files["es256.pem"] = file{ecKey, 0o000} },
			expectErr:      "diskkey: open %s/es256.pem: permission denied",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := params{alg: jwa.ES256(), files: map[string]file{}}
			if tt.overrideParams != nil {
				tt.overrideParams(&p)
			}
			if tt.name == "unreadable" && os.Geteuid() == 0 {
				t.Skip("root can read any file")
			}
			dir := t.TempDir()
			keysDir := filepath.Join(dir, "keys")
			if err := os.Mkdir(keysDir, 0o700); err != nil {
				t.Fatal(err)
			}
			for name, f := range p.files {
				path := filepath.Join(keysDir, name)
				if err := os.WriteFile(path, f.data, 0o600); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(path, f.mode); err != nil {
					t.Fatal(err)
				}
			}

			s, _, err := diskkey.Open(dir, p.alg)

			// Files that were there are never changed or removed.
			for name, f := range p.files {
				path := filepath.Join(keysDir, name)
				_ = os.Chmod(path, 0o600)
				if got := mustRead(t, path); !bytes.Equal(got, f.data) {
					t.Errorf("Open changed %s", name)
				}
			}
			if tt.expectErr != "" {
				want := strings.ReplaceAll(tt.expectErr, "%s", keysDir)
				switch {
				case err == nil:
					t.Fatalf("Open succeeded, want error %q", want)
				case tt.expectStdlibErr != nil:
					if !strings.HasPrefix(err.Error(), want) || !errors.As(err, tt.expectStdlibErr) {
						t.Fatalf("Open error = %v\nwant %q followed by a %T", err, want, tt.expectStdlibErr)
					}
				case err.Error() != want:
					t.Fatalf("Open error = %v\nwant %q", err, want)
				}
				// Nothing was created either.
				entries, _ := os.ReadDir(keysDir)
				if len(entries) != len(p.files) {
					t.Errorf("keys dir holds %d entries after the error, want the %d there before", len(entries), len(p.files))
				}
				return
			}
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if s.Algorithm() != p.alg {
				t.Errorf("Algorithm() = %q, want %q", s.Algorithm(), p.alg)
			}
		})
	}
}

// TestOpenNotRegular checks that a directory or symlink under a key file name
// is refused.
func TestOpenNotRegular(t *testing.T) {
	for _, tt := range []struct {
		name string
		make func(t *testing.T, path string)
	}{
		{"directory", func(t *testing.T, path string) {
			if err := os.Mkdir(path, 0o700); err != nil {
				t.Fatal(err)
			}
		}},
		{"symlink", func(t *testing.T, path string) {
			target := filepath.Join(t.TempDir(), "key.pem")
			if err := os.WriteFile(target, pkcs8PEM(t), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(target, path); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			keysDir := filepath.Join(dir, "keys")
			if err := os.Mkdir(keysDir, 0o700); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(keysDir, "es256.pem")
			tt.make(t, path)
			_, _, err := diskkey.Open(dir, jwa.ES256())
			want := "diskkey: " + path + ": not a regular file"
			if err == nil || err.Error() != want {
				t.Fatalf("Open error = %v, want %q", err, want)
			}
		})
	}
}

type file struct {
	data []byte
	mode os.FileMode
}

func pkcs8PEM(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func checkMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode() & (os.ModePerm | os.ModeDir); got != want {
		t.Errorf("%s mode = %v, want %v", path, got, want)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestOpenConcurrentCreate checks that processes racing to create the same
// key end up with one key: the loser of os.Link loads the winner's.
func TestOpenConcurrentCreate(t *testing.T) {
	for range 5 {
		dir := t.TempDir()
		kids := make([]string, 8)
		var wg sync.WaitGroup
		for i := range kids {
			wg.Go(func() {
				s, _, err := diskkey.Open(dir, jwa.ES256())
				if err != nil {
					t.Errorf("Open: %v", err)
					return
				}
				kids[i] = s.KeyID()
			})
		}
		wg.Wait()
		for _, kid := range kids {
			if kid != kids[0] {
				t.Fatalf("concurrent Opens returned different keys: %q", kids)
			}
		}
	}
}
