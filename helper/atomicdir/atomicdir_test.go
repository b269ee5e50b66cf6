package atomicdir

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/internal/testca"
)

func TestCheckName(t *testing.T) {
	for _, tc := range []struct {
		name      string
		expectErr string
	}{
		{name: "svid.pem"},
		{name: "orders.token"},
		{name: "", expectErr: "atomicdir: empty file name"},
		{name: ".hidden", expectErr: `atomicdir: file name ".hidden" starts with a dot`},
		{name: "..v1", expectErr: `atomicdir: file name "..v1" starts with a dot`},
		{name: "current", expectErr: `atomicdir: file name "current" is reserved for the link`},
		{name: "a/b", expectErr: `atomicdir: file name "a/b" is not a plain file name`},
		{name: `a\b`, expectErr: `atomicdir: file name "a\\b" is not a plain file name`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckName(tc.name)
			if tc.expectErr == "" {
				if err != nil {
					t.Fatalf("err = %v", err)
				}
				return
			}
			if err == nil || err.Error() != tc.expectErr {
				t.Fatalf("err = %v, want %q", err, tc.expectErr)
			}
		})
	}
}

func versions(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), versionPrefix) {
			out = append(out, e.Name())
		}
	}
	return out
}

func mode(t *testing.T, path string) fs.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestWriteModes(t *testing.T) {
	for _, tc := range []struct {
		name              string
		opts              Options
		wantFile, wantDir fs.FileMode
	}{
		{name: "defaults are owner-only", wantFile: 0o600, wantDir: 0o700},
		{name: "configured", opts: Options{FileMode: 0o640, DirMode: 0o750}, wantFile: 0o640, wantDir: 0o750},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "out")
			w, err := New(dir, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			if err := w.Write(map[string][]byte{"a": []byte("1")}); err != nil {
				t.Fatal(err)
			}
			if got := mode(t, dir); got != tc.wantDir&^umask() {
				t.Errorf("output dir mode %o, want %o", got, tc.wantDir)
			}
			if got := mode(t, filepath.Join(dir, CurrentLink)); got != tc.wantDir {
				t.Errorf("version dir mode %o, want %o", got, tc.wantDir)
			}
			if got := mode(t, filepath.Join(dir, CurrentLink, "a")); got != tc.wantFile {
				t.Errorf("file mode %o, want %o", got, tc.wantFile)
			}
		})
	}
}

// umask returns the process umask, which applies to the output directory
// New creates (MkdirAll), not to the versions and files, whose modes are
// set explicitly.
func umask() fs.FileMode {
	dir, err := os.MkdirTemp("", "umask")
	if err != nil {
		return 0
	}
	defer os.RemoveAll(dir)
	p := filepath.Join(dir, "d")
	if os.Mkdir(p, 0o777) != nil {
		return 0
	}
	fi, err := os.Stat(p)
	if err != nil {
		return 0
	}
	return 0o777 &^ fi.Mode().Perm()
}

func TestWriteBadModes(t *testing.T) {
	_, err := New(t.TempDir(), Options{FileMode: fs.ModeSetuid | 0o600})
	if err == nil || err.Error() != "atomicdir: file and directory modes may hold permission bits only" {
		t.Fatalf("err = %v", err)
	}
}

func TestWriteKeepsCurrentAndPrevious(t *testing.T) {
	dir := t.TempDir()
	w, err := New(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	for i := range 4 {
		if err := w.Write(map[string][]byte{"n": {byte('0' + i)}}); err != nil {
			t.Fatal(err)
		}
		cur, err := os.Readlink(filepath.Join(dir, CurrentLink))
		if err != nil {
			t.Fatal(err)
		}
		seen = append(seen, cur)
	}
	got := versions(t, dir)
	if len(got) != 2 || !contains(got, seen[3]) || !contains(got, seen[2]) {
		t.Fatalf("versions %v, want the last two of %v", got, seen)
	}
	files, err := ReadSet(dir, "n")
	if err != nil {
		t.Fatal(err)
	}
	if string(files["n"]) != "3" {
		t.Fatalf("current n = %q, want 3", files["n"])
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func TestWriteRefusesBadNameAndKeepsCurrent(t *testing.T) {
	dir := t.TempDir()
	w, err := New(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Write(map[string][]byte{"a": []byte("1")}); err != nil {
		t.Fatal(err)
	}
	err = w.Write(map[string][]byte{"a": []byte("2"), "../x": []byte("evil")})
	if err == nil || err.Error() != `atomicdir: file name "../x" starts with a dot` {
		t.Fatalf("err = %v", err)
	}
	files, err := ReadSet(dir, "a")
	if err != nil || string(files["a"]) != "1" {
		t.Fatalf("files %q, err %v; want the first version", files, err)
	}
	if got := versions(t, dir); len(got) != 1 {
		t.Fatalf("versions %v", got)
	}
}

func TestCurrentNotALink(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, CurrentLink), 0o700); err != nil {
		t.Fatal(err)
	}
	_, err := New(dir, Options{})
	if err == nil || !strings.HasSuffix(err.Error(), "exists and is not a symbolic link") {
		t.Fatalf("err = %v", err)
	}
}

func TestNewRemovesLeftovers(t *testing.T) {
	dir := t.TempDir()
	w, err := New(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := w.Write(map[string][]byte{"a": []byte("1")}); err != nil {
			t.Fatal(err)
		}
	}
	// A crash between making a version and the rename leaves both.
	if err := os.Mkdir(filepath.Join(dir, versionPrefix+"crashed"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(versionPrefix+"crashed", filepath.Join(dir, tmpLink)); err != nil {
		t.Fatal(err)
	}
	cur, _ := os.Readlink(filepath.Join(dir, CurrentLink))
	if _, err := New(dir, Options{}); err != nil {
		t.Fatal(err)
	}
	if got := versions(t, dir); len(got) != 1 || got[0] != cur {
		t.Fatalf("versions %v, want only %s", got, cur)
	}
	if _, err := os.Lstat(filepath.Join(dir, tmpLink)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("temporary link left: %v", err)
	}
}

// set is one version of the files the helper writes: a certificate and a
// token bound to it.
type set struct{ cert, token []byte }

// newSets returns n sets, each a certificate of its own and a token whose
// cnf is that certificate's thumbprint.
func newSets(t *testing.T, n int) []set {
	t.Helper()
	ca := testca.New(t, "example.org")
	key := testca.NewKey(t)
	sets := make([]set, n)
	for i := range sets {
		svid := ca.SVID(t, "spiffe://example.org/ns/prod/sa/web", time.Hour)
		leaf := svid.Certificates[0]
		sets[i].cert = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw})
		sets[i].token = []byte(testca.SignJWT(t, key, "k", map[string]any{
			"cnf": map[string]string{"x5t#S256": accesstoken.Thumbprint(leaf)},
		}))
	}
	return sets
}

// boundThumbprint returns the cnf x5t#S256 of a JWT, unverified.
func boundThumbprint(token []byte) (string, error) {
	parts := strings.Split(string(token), ".")
	if len(parts) != 3 {
		return "", errors.New("not a JWS")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", err
	}
	var c accesstoken.Claims
	if err := json.Unmarshal(payload, &c); err != nil {
		return "", err
	}
	if c.Confirmation.X5TS256 == "" {
		return "", errors.New("no cnf")
	}
	return c.Confirmation.X5TS256, nil
}

// TestReaderNeverMixesVersions swaps versions thousands of times while
// readers open the files through the link, one pass at a time: in every
// pass, the token's cnf must be the thumbprint of the certificate read in
// the same pass.
func TestReaderNeverMixesVersions(t *testing.T) {
	const swaps = 3000
	dir := t.TempDir()
	w, err := New(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	// fsync makes a version durable across a crash; it has nothing to do
	// with what a reader sees, and thousands of them take half a minute.
	w.noSync = true
	sets := newSets(t, 4)
	write := func(s set) {
		if err := w.Write(map[string][]byte{"svid.pem": s.cert, "web.token": s.token}); err != nil {
			t.Error(err)
		}
	}
	write(sets[0])

	var passes, mismatches, retried atomic.Int64
	var firstMismatch atomic.Value
	done := make(chan struct{})
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				default:
				}
				files, err := ReadSet(dir, "svid.pem", "web.token")
				if errors.Is(err, fs.ErrNotExist) {
					retried.Add(1) // the version went away, five times over: no mix
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				passes.Add(1)
				block, _ := pem.Decode(files["svid.pem"])
				if block == nil {
					mismatches.Add(1)
					firstMismatch.CompareAndSwap(nil, "no PEM certificate")
					continue
				}
				leaf, err := x509.ParseCertificate(block.Bytes)
				if err != nil {
					t.Error(err)
					return
				}
				bound, err := boundThumbprint(files["web.token"])
				if err != nil {
					t.Error(err)
					return
				}
				if bound != accesstoken.Thumbprint(leaf) {
					mismatches.Add(1)
					firstMismatch.CompareAndSwap(nil, "token bound to "+bound+", certificate "+accesstoken.Thumbprint(leaf))
				}
			}
		}()
	}
	for i := 1; i <= swaps; i++ {
		write(sets[i%len(sets)])
	}
	close(done)
	wg.Wait()
	t.Logf("%d swaps, %d reader passes, %d passes restarted five times", swaps, passes.Load(), retried.Load())
	if mismatches.Load() != 0 {
		t.Fatalf("%d passes read a mismatched set; first: %v", mismatches.Load(), firstMismatch.Load())
	}
	if passes.Load() < 100 {
		t.Fatalf("only %d reader passes ran concurrently with the swaps", passes.Load())
	}
}
