package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
	"github.com/spiffe-sts/spiffe-sts/internal/fakeworkloadapi"
	"github.com/spiffe-sts/spiffe-sts/internal/pgtest"
	"github.com/spiffe-sts/spiffe-sts/internal/testca"
	"github.com/spiffe-sts/spiffe-sts/issuer"
	"github.com/spiffe-sts/spiffe-sts/issuer/keyring"
	"github.com/spiffe-sts/spiffe-sts/issuer/keyring/filestore"
)

// dataDirOf returns the data_dir of a runConfig.
func dataDirOf(src string) string {
	return strings.Split(strings.Split(src, `data_dir            = "`)[1], `"`)[0]
}

// keys runs `spiffe-sts keys args...` and returns its exit code and output.
func keys(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := realMain(append([]string{"keys"}, args...), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// activeKID returns the kid of the active key in a `keys list` table.
func activeKID(t *testing.T, table string) string {
	t.Helper()
	for _, l := range strings.Split(table, "\n") {
		if f := strings.Fields(l); len(f) == 7 && f[3] == "active" {
			return f[1]
		}
	}
	t.Fatalf("no active key in:\n%s", table)
	return ""
}

// checkKeysCommands runs list, rotate and revoke against the ring of the
// configuration at path, which holds one active key.
func checkKeysCommands(t *testing.T, path string) {
	t.Helper()
	code, out, errOut := keys(t, "list", "-config", path)
	if code != exitOK {
		t.Fatalf("keys list: %d %s", code, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || strings.Join(strings.Fields(lines[0]), " ") != "SEQ KID ALG STATE CREATED ACTIVATES REVOKED" {
		t.Fatalf("keys list:\n%s", out)
	}
	first := activeKID(t, out)
	if f := strings.Fields(lines[1]); f[0] != "1" || f[2] != "ES256" || f[6] != "-" {
		t.Errorf("keys list row %q", lines[1])
	} else if _, err := time.Parse(time.RFC3339, f[4]); err != nil || !strings.HasSuffix(f[4], "Z") {
		t.Errorf("CREATED %q is not RFC 3339 UTC", f[4])
	}

	code, out, errOut = keys(t, "rotate", "-config", path)
	if code != exitOK || !strings.HasPrefix(out, "created key ") || !strings.Contains(out, "(seq 2, ES256): published now, signs from ") {
		t.Fatalf("keys rotate: %d %q %s", code, out, errOut)
	}
	next := strings.Fields(out)[2]

	code, out, errOut = keys(t, "revoke", "-config", path, "-kid", first)
	want := "revoked key " + first + ": withdrawn from the JWKS; it signs no more\nkey " + next + " (seq 2, ES256) signs now\n"
	if code != exitOK || out != want {
		t.Fatalf("keys revoke: %d %q %s, want %q", code, out, errOut, want)
	}
	_, out, _ = keys(t, "list", "-config", path)
	if activeKID(t, out) != next || !strings.Contains(out, "revoked") {
		t.Fatalf("keys list after revoke:\n%s", out)
	}
	code, _, errOut = keys(t, "revoke", "-config", path, "-kid", "nope")
	if code != exitError || errOut != "no key with kid \"nope\" (see spiffe-sts keys list)\n" {
		t.Errorf("revoke of an unknown kid: %d %q", code, errOut)
	}
}

// startRing creates the ring of the configuration at path, as run does.
func startRing(t *testing.T, path string) *keyring.Manager {
	t.Helper()
	cfg, err := loadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	m, closeStore, err := startKeyRing(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closeStore)
	return m
}

func TestKeysCommandsEmbedded(t *testing.T) {
	src := runConfig(t, "unix:///run/absent.sock", freeAddr(t), freeAddr(t))
	path := writeConfig(t, src)
	startRing(t, path)
	checkKeysCommands(t, path)
}

func TestKeysCommandsPostgres(t *testing.T) {
	pg := pgtest.Start(t)
	dir := t.TempDir()
	dsnFile, kekFile := filepath.Join(dir, "connection-string"), filepath.Join(dir, "kek")
	kek := make([]byte, 32)
	_, _ = rand.Read(kek)
	if err := os.WriteFile(dsnFile, []byte(pg.NewDatabase(t)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kekFile, []byte(base64.StdEncoding.EncodeToString(kek)), 0o600); err != nil {
		t.Fatal(err)
	}
	// Secrets are mounted as symlinks: reading through them is fine.
	link := filepath.Join(dir, "kek-link")
	if err := os.Symlink(kekFile, link); err != nil {
		t.Fatal(err)
	}
	src := runConfig(t, "unix:///run/absent.sock", freeAddr(t), freeAddr(t)) + fmt.Sprintf(`
datastore "postgres" {
  connection_string_file  = %q
  key_encryption_key_file = %q
}
`, dsnFile, link)
	path := writeConfig(t, src)
	startRing(t, path)
	checkKeysCommands(t, path)
}

func TestKeysUsage(t *testing.T) {
	for _, tc := range []struct {
		args         []string
		expectCode   int
		expectStderr string
	}{
		{nil, exitUsage, "Usage: spiffe-sts keys <command> -config FILE\n"},
		{[]string{"burn"}, exitUsage, "spiffe-sts keys: unknown command \"burn\"\n"},
		{[]string{"list"}, exitUsage, "spiffe-sts keys list: -config is required\n"},
		{[]string{"revoke", "-config", "x.hcl"}, exitUsage, "spiffe-sts keys revoke: -kid is required\n"},
		{[]string{"list", "-config", "missing.hcl"}, exitError, "read configuration: open missing.hcl: no such file or directory\n"},
	} {
		code, _, errOut := keys(t, tc.args...)
		if code != tc.expectCode || !strings.HasPrefix(errOut, tc.expectStderr) {
			t.Errorf("keys %v: %d %q, want %d and prefix %q", tc.args, code, errOut, tc.expectCode, tc.expectStderr)
		}
	}
}

// TestLegacyImportKeepsKID checks that a key file of the old layout
// (data_dir/keys/es256.pem) becomes the ring's active key, with its kid,
// and stays on disk unchanged.
func TestLegacyImportKeepsKID(t *testing.T) {
	src := runConfig(t, "unix:///run/absent.sock", freeAddr(t), freeAddr(t))
	keysDir := filepath.Join(dataDirOf(src), keyring.LegacyKeysDir)
	if err := os.MkdirAll(keysDir, 0o700); err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(keysDir, "es256.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	if err := os.WriteFile(file, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	wantKID, err := issuer.KeyID(key.Public())
	if err != nil {
		t.Fatal(err)
	}
	m := startRing(t, writeConfig(t, src))
	if _, kid, _ := m.Active(); kid != wantKID {
		t.Fatalf("active kid %s, want the legacy key's %s", kid, wantKID)
	}
	if got, err := os.ReadFile(file); err != nil || !bytes.Equal(got, pemBytes) {
		t.Errorf("the legacy file changed: %v", err)
	}
}

// TestRunBadRingFile checks that start-up refuses an embedded ring file
// that is corrupt or that group or others may read, naming it, and leaves
// it untouched.
func TestRunBadRingFile(t *testing.T) {
	ca := testca.New(t, "example.org")
	wl := fakeworkloadapi.Start(t, ca, ca.SVID(t, "spiffe://example.org/sts", time.Hour))
	for _, tc := range []struct {
		name      string
		content   string
		mode      os.FileMode
		expectErr string // FILE is the ring file
	}{
		{name: "corrupt", content: "not JSON", mode: 0o600, expectErr: "signing keys: filestore: FILE: not a key ring file: "},
		{name: "group-readable", content: `{"version":1,"keys":[]}`, mode: 0o640, expectErr: "signing keys: filestore: FILE: mode 0640 gives group or others access; want 0600"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := runConfig(t, wl.Addr, freeAddr(t), freeAddr(t))
			file := filepath.Join(dataDirOf(src), filestore.FileName)
			if err := os.WriteFile(file, []byte(tc.content), tc.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(file, tc.mode); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			err := run(ctx, writeConfig(t, src), io.Discard, io.Discard)
			if want := strings.ReplaceAll(tc.expectErr, "FILE", file); err == nil || !strings.HasPrefix(err.Error(), want) {
				t.Fatalf("run: %v, want %s", err, want)
			}
			got, err := os.ReadFile(file)
			fi, statErr := os.Stat(file)
			if err != nil || string(got) != tc.content || statErr != nil || fi.Mode().Perm() != tc.mode {
				t.Errorf("the ring file changed: %q, %v, %v", got, err, statErr)
			}
		})
	}
}

// TestRunRevokeLeavesJWKS runs a server on an embedded ring and checks
// that `keys rotate` publishes a key and `keys revoke` withdraws one from
// the server's /jwks within the refresh interval, and that the ring's
// events are logged.
func TestRunRevokeLeavesJWKS(t *testing.T) {
	ca := testca.New(t, "example.org")
	wl := fakeworkloadapi.Start(t, ca, ca.SVID(t, "spiffe://example.org/sts", time.Hour))
	bind := freeAddr(t)
	src := runConfig(t, wl.Addr, bind, freeAddr(t)) + `
datastore "embedded" {
  refresh_interval = "50ms"
}
`
	logs, stop := startRun(t, src)
	logs.waitFor(t, logServing)
	path := writeConfig(t, src) // the same configuration, for the keys commands

	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs:            roots,
		InsecureSkipVerify: true, // the SVID has no IP SAN; this reads public keys only
	}}}
	defer client.CloseIdleConnections()
	jwksKIDs := func() map[string]bool {
		t.Helper()
		resp, err := client.Get("https://" + bind + protocol.PathJWKS)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if cc := resp.Header.Get("Cache-Control"); cc != "public, max-age=300" {
			t.Errorf("/jwks Cache-Control %q", cc)
		}
		var doc struct {
			Keys []struct {
				KID string `json:"kid"`
			} `json:"keys"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for _, k := range doc.Keys {
			out[k.KID] = true
		}
		return out
	}
	// waitJWKS waits until cond holds for the served JWKS, failing after
	// 10s (a guard against a hung test only).
	waitJWKS := func(what string, cond func(map[string]bool) bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond(jwksKIDs()) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s; JWKS %v\n%s", what, jwksKIDs(), logs)
			}
			<-time.After(10 * time.Millisecond) // the next poll of a condition with a deadline
		}
	}

	_, out, _ := keys(t, "list", "-config", path)
	first := activeKID(t, out)
	logs.waitFor(t, "[INFO]  spiffe-sts.keyring: signing key loaded: kid="+first+" seq=1 alg=ES256 state=active")
	if got := jwksKIDs(); len(got) != 1 || !got[first] {
		t.Fatalf("JWKS %v, want %s", got, first)
	}
	code, out, errOut := keys(t, "rotate", "-config", path)
	if code != exitOK {
		t.Fatalf("keys rotate: %s", errOut)
	}
	next := strings.Fields(out)[2]
	waitJWKS("the rotated key", func(k map[string]bool) bool { return k[next] && k[first] })
	logs.waitFor(t, "[INFO]  spiffe-sts.keyring: signing key created: kid="+next+" seq=2 alg=ES256 state=next")

	if code, _, errOut := keys(t, "revoke", "-config", path, "-kid", first); code != exitOK {
		t.Fatalf("keys revoke: %s", errOut)
	}
	waitJWKS("the revoked key to leave", func(k map[string]bool) bool { return !k[first] && k[next] })
	logs.waitFor(t, "[WARN]  spiffe-sts.keyring: signing key revoked: kid="+first)
	logs.waitFor(t, "[INFO]  spiffe-sts.keyring: signing key activated: kid="+next)

	if err := stop(); err != nil {
		t.Fatalf("run: %v\n%s", err, logs)
	}
}
