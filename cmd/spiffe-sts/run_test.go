package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/spiffe-sts/spiffe-sts/exchange"
	"github.com/spiffe-sts/spiffe-sts/internal/fakeworkloadapi"
	"github.com/spiffe-sts/spiffe-sts/internal/ststest"
	"github.com/spiffe-sts/spiffe-sts/internal/testca"
	"github.com/spiffe-sts/spiffe-sts/issuer/diskkey"
	stsid "github.com/spiffe-sts/spiffe-sts/spiffeid"
)

// writeConfig writes src to a file in a new temporary directory and
// returns its path.
func writeConfig(t *testing.T, src string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sts.hcl")
	if err := os.WriteFile(path, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestMainCommands(t *testing.T) {
	t.Setenv(endpointSocketEnv, "")
	good := writeConfig(t, baselineConfig)
	bad := writeConfig(t, replace(`"2m"`, `"5x"`)(replace(`"debug"`, `"loud"`)(baselineConfig)))
	missing := filepath.Join(t.TempDir(), "missing.hcl")

	for _, tc := range []struct {
		name         string
		args         []string
		expectCode   int
		expectStdout string
		expectStderr string // a prefix of stderr
	}{
		{
			name:         "validate",
			args:         []string{"validate", "-config", good},
			expectStdout: good + ": configuration OK (2 policy rules)\n",
		},
		{
			name:         "validate --config",
			args:         []string{"validate", "--config=" + good},
			expectStdout: good + ": configuration OK (2 policy rules)\n",
		},
		{
			name:       "validate a bad file",
			args:       []string{"validate", "-config", bad},
			expectCode: exitError,
			expectStderr: bad + `:9: server: log_level: must be trace, debug, info, warn or error, got "loud"` + "\n" +
				bad + `:22: policy "spiffe://example.org/ns/*/sa/web": max_ttl: invalid duration "5x"` + "\n",
		},
		{
			name:         "validate a missing file",
			args:         []string{"validate", "-config", missing},
			expectCode:   exitError,
			expectStderr: "read configuration: open " + missing + ": no such file or directory\n",
		},
		{
			name:         "run with a bad file",
			args:         []string{"run", "-config", bad},
			expectCode:   exitError,
			expectStderr: bad + `:9: server: log_level:`,
		},
		{
			name:         "no command",
			expectCode:   exitUsage,
			expectStderr: "Usage: spiffe-sts <command> -config FILE\n",
		},
		{
			name:         "unknown command",
			args:         []string{"serve"},
			expectCode:   exitUsage,
			expectStderr: "spiffe-sts: unknown command \"serve\"\n\nUsage:",
		},
		{
			name:         "help",
			args:         []string{"help"},
			expectStdout: usage,
		},
		{
			name:         "-h",
			args:         []string{"-h"},
			expectStdout: usage,
		},
		{
			name:         "validate -h",
			args:         []string{"validate", "-h"},
			expectStdout: "Usage: spiffe-sts validate -config FILE\n\n  -config file\n    \tpath of the HCL configuration file (required)\n",
		},
		{
			name:         "validate without -config",
			args:         []string{"validate"},
			expectCode:   exitUsage,
			expectStderr: "spiffe-sts validate: -config is required\nUsage: spiffe-sts validate -config FILE\n",
		},
		{
			name:         "run without -config",
			args:         []string{"run"},
			expectCode:   exitUsage,
			expectStderr: "spiffe-sts run: -config is required\n",
		},
		{
			name:         "unknown flag",
			args:         []string{"validate", "-conf", good},
			expectCode:   exitUsage,
			expectStderr: "flag provided but not defined: -conf\nUsage: spiffe-sts validate",
		},
		{
			name:         "extra argument",
			args:         []string{"validate", "-config", good, "extra"},
			expectCode:   exitUsage,
			expectStderr: "spiffe-sts validate: unexpected argument \"extra\"\n",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := realMain(tc.args, &stdout, &stderr)
			if code != tc.expectCode {
				t.Errorf("exit code %d, want %d; stderr:\n%s", code, tc.expectCode, stderr.String())
			}
			if got := stdout.String(); got != tc.expectStdout {
				t.Errorf("stdout:\n%q\nwant:\n%q", got, tc.expectStdout)
			}
			if got := stderr.String(); !strings.HasPrefix(got, tc.expectStderr) || (tc.expectStderr == "") != (got == "") {
				t.Errorf("stderr:\n%q\nwant prefix:\n%q", got, tc.expectStderr)
			}
		})
	}
}

func TestExampleConfig(t *testing.T) {
	t.Setenv(endpointSocketEnv, "")
	const path = "testdata/example.hcl"
	var stdout, stderr bytes.Buffer
	if code := realMain([]string{"validate", "-config", path}, &stdout, &stderr); code != exitOK {
		t.Fatalf("exit code %d; stderr:\n%s", code, stderr.String())
	}
	if want := path + ": configuration OK (3 policy rules)\n"; stdout.String() != want {
		t.Fatalf("stdout %q, want %q", stdout.String(), want)
	}
}

// policyRecorder records SetPolicy calls.
type policyRecorder struct{ policies []*stsid.Policy }

func (r *policyRecorder) SetPolicy(p *stsid.Policy) { r.policies = append(r.policies, p) }

func TestReload(t *testing.T) {
	t.Setenv(endpointSocketEnv, "")
	webID := spiffeid.RequireFromString("spiffe://example.org/ns/prod/sa/web")
	apiID := spiffeid.RequireFromString("spiffe://example.org/ns/prod/sa/api")
	apiPolicy := baselineConfig + `
policy "spiffe://example.org/ns/prod/sa/api" {
  audiences = ["https://db.example.org"]
}
`
	for _, tc := range []struct {
		name         string
		newConfig    func(string) string
		expectErr    string
		expectLog    []string
		expectNotLog []string
		// checkPolicy checks the applied policy; nil when none may be set.
		checkPolicy func(t *testing.T, p *stsid.Policy)
	}{
		{
			name:         "policy added",
			newConfig:    func(string) string { return apiPolicy },
			expectLog:    []string{`[INFO]  reloading the policy: config=`, `[INFO]  policy reloaded: rules=3`},
			expectNotLog: []string{"[WARN]"},
			checkPolicy: func(t *testing.T, p *stsid.Policy) {
				if _, ok := p.RuleFor(apiID); !ok {
					t.Error("the new rule does not apply")
				}
			},
		},
		{
			name:      "policy removed",
			newConfig: deleteLine(`audiences = ["https://db.example.org"]`),
			expectErr: `:25: policy "spiffe://example.org/ns/prod/sa/db": audiences: at least one audience is required`,
			expectLog: []string{`[ERROR] configuration reload failed; keeping the current policy: error=`},
		},
		{
			name:      "syntax error",
			newConfig: replace("}", ""),
			expectErr: `sts.hcl:1: Unclosed configuration block: There is no closing brace for this block before the end of the file.`,
			expectLog: []string{`[ERROR] configuration reload failed; keeping the current policy`},
		},
		{
			name:      "bad server section",
			newConfig: replace(`"debug"`, `"loud"`),
			expectErr: `:9: server: log_level: must be trace, debug, info, warn or error, got "loud"`,
			expectLog: []string{`[ERROR] configuration reload failed; keeping the current policy`},
		},
		{
			name: "server and issuer changed",
			newConfig: func(s string) string {
				return replace(`"127.0.0.1:8443"`, `"127.0.0.1:9443"`)(replace(`"10m"`, `"9m"`)(s))
			},
			expectLog: []string{
				`[WARN]  changes outside policy blocks take effect only after a restart: sections=["server", "issuer"]`,
				`[INFO]  policy reloaded: rules=2`,
			},
			checkPolicy: func(t *testing.T, p *stsid.Policy) {
				rule, ok := p.RuleFor(webID)
				if !ok || rule.MaxTTL != 2*time.Minute {
					t.Errorf("rule for %s: %+v, %t", webID, rule, ok)
				}
			},
		},
		{
			name:      "missing file",
			newConfig: nil,
			expectErr: "read configuration: open ",
			expectLog: []string{`[ERROR] configuration reload failed; keeping the current policy`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, baselineConfig)
			running, err := loadConfig(path)
			if err != nil {
				t.Fatal(err)
			}
			if tc.newConfig == nil {
				err = os.Remove(path)
			} else {
				err = os.WriteFile(path, []byte(tc.newConfig(baselineConfig)), 0o600)
			}
			if err != nil {
				t.Fatal(err)
			}
			var logs bytes.Buffer
			setter := new(policyRecorder)
			r := &reloader{
				path:    path,
				running: running,
				sts:     setter,
				log:     hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Info}),
			}

			err = r.reload()
			switch {
			case tc.expectErr == "" && err != nil:
				t.Fatalf("reload: %v", err)
			case tc.expectErr != "" && err == nil:
				t.Fatalf("reload succeeded, want error containing %q", tc.expectErr)
			case tc.expectErr != "" && !strings.Contains(err.Error(), tc.expectErr):
				t.Fatalf("reload error %q, want one containing %q", err, tc.expectErr)
			}
			for _, want := range tc.expectLog {
				if !strings.Contains(logs.String(), want) {
					t.Errorf("log lacks %q:\n%s", want, logs.String())
				}
			}
			for _, unwanted := range tc.expectNotLog {
				if strings.Contains(logs.String(), unwanted) {
					t.Errorf("log has %q:\n%s", unwanted, logs.String())
				}
			}
			if tc.checkPolicy == nil {
				if len(setter.policies) != 0 {
					t.Fatalf("SetPolicy called %d times; the old policy must stay", len(setter.policies))
				}
				return
			}
			if len(setter.policies) != 1 {
				t.Fatalf("SetPolicy called %d times, want once", len(setter.policies))
			}
			tc.checkPolicy(t, setter.policies[0])
			if r.running != running {
				t.Error("the running configuration changed")
			}
		})
	}
}

func TestHealthHandler(t *testing.T) {
	var state healthState
	h := healthHandler(state.ready)
	get := func(path string) (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code, rec.Body.String()
	}
	check := func(path string, expectCode int, expectBody string) {
		t.Helper()
		if code, body := get(path); code != expectCode || body != expectBody {
			t.Errorf("GET %s: %d %q, want %d %q", path, code, body, expectCode, expectBody)
		}
	}

	// Before the token server exists.
	check("/healthz", http.StatusOK, "ok\n")
	check("/readyz", http.StatusServiceUnavailable, "not ready\n")
	check("/token", http.StatusNotFound, "404 page not found\n")

	// A server without its JWT bundle is not ready.
	sts := ststest.Start(t, nil)
	notReady, err := exchange.New(exchange.Config{
		IssuerURL:   sts.URL,
		TrustDomain: sts.CA.TrustDomain,
		SVIDs:       sts.SVID,
		X509Bundles: sts.CA.Bundle(),
		JWTBundles:  testca.New(t, "other.example").Bundle(),
		Policy:      ststest.DefaultPolicy(t),
		Minter:      sts.Issuer,
		Keys:        sts.Issuer.KeySet(),
	})
	if err != nil {
		t.Fatal(err)
	}
	state.sts.Store(notReady)
	check("/healthz", http.StatusOK, "ok\n")
	check("/readyz", http.StatusServiceUnavailable, "not ready\n")

	state.sts.Store(sts.Server)
	check("/healthz", http.StatusOK, "ok\n")
	check("/readyz", http.StatusOK, "ready\n")
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// freeAddr returns a loopback address with a port that was free a moment
// ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// runConfig returns a configuration for run with the given addresses.
func runConfig(t *testing.T, workloadAPI, bind, health string) string {
	t.Helper()
	return fmt.Sprintf(`server {
  trust_domain        = "example.org"
  issuer_url          = "https://%s"
  bind_address        = %q
  data_dir            = %q
  workload_api_socket = %q
  health_address      = %q
  log_level           = "debug"
}

policy "spiffe://example.org/ns/prod/sa/*" {
  audiences = ["spiffe://example.org/api"]
  scopes    = ["read"]
}
`, bind, bind, t.TempDir(), workloadAPI, health)
}

// startRun runs the server in the background until the test ends and
// returns its log and a function that stops it and returns run's error.
func startRun(t *testing.T, configSrc string) (logs *syncBuffer, stop func() error) {
	t.Helper()
	path := writeConfig(t, configSrc)
	ctx, cancel := context.WithCancel(context.Background())
	logs = new(syncBuffer)
	done := make(chan error, 1)
	go func() { done <- run(ctx, path, io.Discard, logs) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(15 * time.Second):
				err = errors.New("run did not return")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return logs, stop
}

// httpGet returns the status of GET url, or 0 when it cannot connect.
func httpGet(c *http.Client, url string) int {
	resp, err := c.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// waitFor polls cond until it holds or 10s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRunStopsWhileWaitingForWorkloadAPI(t *testing.T) {
	socket := "unix://" + filepath.Join(t.TempDir(), "absent.sock")
	health := freeAddr(t)
	logs, stop := startRun(t, runConfig(t, socket, freeAddr(t), health))

	// The health listener is up before the SVID arrives.
	waitFor(t, "/healthz", func() bool { return httpGet(http.DefaultClient, "http://"+health+"/healthz") == http.StatusOK })
	if code := httpGet(http.DefaultClient, "http://"+health+"/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz: %d, want 503", code)
	}
	waitFor(t, "the waiting log", func() bool {
		return strings.Contains(logs.String(), "[INFO]  spiffe-sts: waiting for the X509-SVID and bundles from the Workload API: address="+socket)
	})
	if err := stop(); err != nil {
		t.Fatalf("run: %v\n%s", err, logs)
	}
	if code := httpGet(http.DefaultClient, "http://"+health+"/healthz"); code != 0 {
		t.Errorf("/healthz after stop: %d, want no listener", code)
	}
}

func TestRun(t *testing.T) {
	ca := testca.New(t, "example.org")
	serverSVID := ca.SVID(t, "spiffe://example.org/sts", time.Hour)
	wl := fakeworkloadapi.Start(t, ca, serverSVID)
	bind, health := freeAddr(t), freeAddr(t)
	src := runConfig(t, wl.Addr, bind, health)
	logs, stop := startRun(t, src)

	waitFor(t, "/readyz", func() bool { return httpGet(http.DefaultClient, "http://"+health+"/readyz") == http.StatusOK })
	if !strings.Contains(logs.String(), "[INFO]  spiffe-sts: serving: address="+bind+" issuer=https://"+bind+" spiffe_id=spiffe://example.org/sts rules=1") {
		t.Errorf("no serving log:\n%s", logs)
	}

	// A workload gets a token over mTLS.
	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	workloadSVID := ca.SVID(t, "spiffe://example.org/ns/prod/sa/web", time.Hour)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs:      roots,
		Certificates: []tls.Certificate{tlsCertificate(workloadSVID)},
		ServerName:   "127.0.0.1",
		// The SVID has no IP SAN; check the chain and the SPIFFE ID.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, _, err := x509svid.Verify(cs.PeerCertificates, ca.Bundle())
			return err
		},
	}}}
	defer client.CloseIdleConnections()
	resp, err := client.PostForm("https://"+bind+exchange.PathToken, url.Values{
		"grant_type": {"client_credentials"},
		"audience":   {"spiffe://example.org/api"},
	})
	if err != nil {
		t.Fatal(err)
	}
	var body struct {
		AccessToken string `json:"access_token"`
		Scope       string `json:"scope"`
	}
	err = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || body.AccessToken == "" {
		t.Fatalf("token request: %d, %v, %+v", resp.StatusCode, err, body)
	}
	if strings.Contains(logs.String(), body.AccessToken) {
		t.Error("the access token was logged")
	}
	// The signing key was created in data_dir/keys.
	dataDir := strings.Split(strings.Split(src, `data_dir            = "`)[1], `"`)[0]
	if _, err := os.Stat(filepath.Join(dataDir, diskkey.KeysDir, "es256.pem")); err != nil {
		t.Errorf("signing key: %v", err)
	}

	// The server's SVID rotates.
	rotated := ca.SVID(t, "spiffe://example.org/sts", 2*time.Hour)
	wl.SetSVID(rotated)
	waitFor(t, "the rotation log", func() bool {
		return strings.Contains(logs.String(), "[INFO]  spiffe-sts: X509-SVID rotated: spiffe_id=spiffe://example.org/sts expires="+rotated.Certificates[0].NotAfter.UTC().Format(time.RFC3339))
	})

	if err := stop(); err != nil {
		t.Fatalf("run: %v\n%s", err, logs)
	}
	if !strings.Contains(logs.String(), "[INFO]  spiffe-sts: shutting down") {
		t.Errorf("no shutdown log:\n%s", logs)
	}
}

func TestRunWrongTrustDomain(t *testing.T) {
	ca := testca.New(t, "other.example")
	wl := fakeworkloadapi.Start(t, ca, ca.SVID(t, "spiffe://other.example/sts", time.Hour))
	path := writeConfig(t, runConfig(t, wl.Addr, freeAddr(t), freeAddr(t)))
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	err := run(ctx, path, io.Discard, io.Discard)
	const want = `own X509-SVID spiffe://other.example/sts is not in trust domain "example.org" (server.trust_domain)`
	if err == nil || err.Error() != want {
		t.Fatalf("run: %v, want %s", err, want)
	}
}

func TestRunBadKeyDir(t *testing.T) {
	ca := testca.New(t, "example.org")
	wl := fakeworkloadapi.Start(t, ca, ca.SVID(t, "spiffe://example.org/sts", time.Hour))
	src := runConfig(t, wl.Addr, freeAddr(t), freeAddr(t))
	dataDir := strings.Split(strings.Split(src, `data_dir            = "`)[1], `"`)[0]
	keys := filepath.Join(dataDir, diskkey.KeysDir)
	if err := os.MkdirAll(keys, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(keys, "es256.pem"), []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	err := run(ctx, writeConfig(t, src), io.Discard, io.Discard)
	want := "signing keys: diskkey: " + filepath.Join(keys, "es256.pem") + ": no PEM block"
	if err == nil || err.Error() != want {
		t.Fatalf("run: %v, want %s", err, want)
	}
}

func tlsCertificate(svid *x509svid.SVID) tls.Certificate {
	cert := tls.Certificate{PrivateKey: svid.PrivateKey, Leaf: svid.Certificates[0]}
	for _, c := range svid.Certificates {
		cert.Certificate = append(cert.Certificate, c.Raw)
	}
	return cert
}
