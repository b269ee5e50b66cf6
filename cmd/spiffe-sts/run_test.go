package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
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
	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
	"github.com/spiffe-sts/spiffe-sts/internal/fakeworkloadapi"
	"github.com/spiffe-sts/spiffe-sts/internal/ststest"
	"github.com/spiffe-sts/spiffe-sts/internal/testca"
	"github.com/spiffe-sts/spiffe-sts/internal/testrun"
	"github.com/spiffe-sts/spiffe-sts/issuer/keyring"
	"github.com/spiffe-sts/spiffe-sts/issuer/keyring/filestore"
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
	// Its JWKS URL and files do not exist: validate reads none of them.
	external := writeConfig(t, externalConfig)

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
			name:         "validate with external issuers",
			args:         []string{"validate", "-config", external},
			expectStdout: external + ": configuration OK (3 policy rules, 2 external issuers)\n",
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
	if want := path + ": configuration OK (4 policy rules, 1 external issuer)\n"; stdout.String() != want {
		t.Fatalf("stdout %q, want %q", stdout.String(), want)
	}

	// The example's JWKS file is usable.
	cfg, err := loadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	issuers, err := newExternalIssuers(context.Background(), cfg.ExternalIssuers)
	if err != nil || len(issuers) != 1 || issuers[0].Name() != "corp" || issuers[0].Issuer() != "https://idp.example.com" {
		t.Fatalf("external issuers of the example: %v, %v", issuers, err)
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
			name: "limits added, rate_limit in a rule",
			newConfig: func(s string) string {
				return replace(`  audiences = ["https://db.example.org"]`, "  audiences = [\"https://db.example.org\"]\n  rate_limit {\n    rps = 3\n  }")(s) +
					"limits {\n  max_in_flight = 10\n}\n"
			},
			expectLog: []string{
				`[WARN]  changes outside policy blocks take effect only after a restart: sections=["limits"]`,
				`[INFO]  policy reloaded: rules=2`,
			},
			checkPolicy: func(t *testing.T, p *stsid.Policy) {
				rule, ok := p.RuleFor(spiffeid.RequireFromString("spiffe://example.org/ns/prod/sa/db"))
				if !ok || rule.RateLimit == nil || *rule.RateLimit != (stsid.RateLimit{PerSecond: 3, Burst: 3}) {
					t.Errorf("rule for db: %+v, %t; want rate_limit 3/s burst 3", rule, ok)
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
			checkLogs(t, logs.String(), tc.expectLog, tc.expectNotLog)
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

// checkLogs reports each of want that logs lacks and each of unwanted that
// it has.
func checkLogs(t *testing.T, logs string, want, unwanted []string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(logs, w) {
			t.Errorf("log lacks %q:\n%s", w, logs)
		}
	}
	for _, u := range unwanted {
		if strings.Contains(logs, u) {
			t.Errorf("log has %q:\n%s", u, logs)
		}
	}
}

// TestReloadExternal reloads a configuration with external issuers and
// delegation: delegation takes effect, external_issuer changes need a
// restart.
func TestReloadExternal(t *testing.T) {
	t.Setenv(endpointSocketEnv, "")
	frontendID := spiffeid.RequireFromString("spiffe://example.org/ns/shop/sa/frontend")
	// externalChangedLog is what a reload that changes external_issuer logs.
	externalChangedLog := []string{
		`[WARN]  changes outside policy blocks take effect only after a restart: sections=["external_issuer"]`,
		`[INFO]  policy reloaded: rules=3`,
	}
	mayActFor := func(issuer, whom string) func(*testing.T, *stsid.Rule) {
		return func(t *testing.T, r *stsid.Rule) {
			if !r.MayActForIssuer(issuer) {
				t.Errorf("the frontend may not act for %s", whom)
			}
		}
	}
	for _, tc := range []struct {
		name         string
		running      string
		newConfig    func(string) string
		expectLog    []string
		expectNotLog []string
		checkRule    func(t *testing.T, r *stsid.Rule)
	}{
		{
			name:         "delegation changed",
			running:      externalConfig,
			newConfig:    replace(`max_depth     = 2`, `max_depth     = 3`),
			expectLog:    []string{`[INFO]  policy reloaded: rules=3`},
			expectNotLog: []string{"[WARN]"},
			checkRule: func(t *testing.T, r *stsid.Rule) {
				if r.Delegation.MaxDepth != 3 {
					t.Errorf("max_depth %d, want 3", r.Delegation.MaxDepth)
				}
			},
		},
		{
			name:    "delegation removed",
			running: externalConfig,
			newConfig: func(s string) string {
				start, end := strings.Index(s, "  delegation {"), strings.LastIndex(s, "  }\n")
				return s[:start] + s[end+len("  }\n"):]
			},
			expectLog:    []string{`[INFO]  policy reloaded: rules=3`},
			expectNotLog: []string{"[WARN]"},
			checkRule: func(t *testing.T, r *stsid.Rule) {
				if r.Delegation != nil {
					t.Errorf("delegation %+v, want none", r.Delegation)
				}
			},
		},
		{
			name:      "external issuer changed",
			running:   externalConfig,
			newConfig: replace(`"https://idp.example.com/jwks"`, `"https://idp.example.com/keys"`),
			expectLog: externalChangedLog,
			checkRule: mayActFor("corp", "corp users"),
		},
		{
			name:      "external issuer and delegation added",
			running:   baselineConfig,
			newConfig: func(string) string { return externalConfig },
			expectLog: externalChangedLog,
			checkRule: mayActFor("k8s", "k8s subjects"),
		},
		{
			name:         "unknown issuer in delegation",
			running:      externalConfig,
			newConfig:    replace(`["corp", "k8s"]`, `["corp", "okta"]`),
			expectLog:    []string{`[ERROR] configuration reload failed; keeping the current policy: error="`, `issuers: unknown external issuer \"okta\"`},
			expectNotLog: []string{"policy reloaded"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeConfig(t, tc.running)
			running, err := loadConfig(path)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(tc.newConfig(tc.running)), 0o600); err != nil {
				t.Fatal(err)
			}
			var logs bytes.Buffer
			setter := new(policyRecorder)
			r := &reloader{path: path, running: running, sts: setter, log: hclog.New(&hclog.LoggerOptions{Output: &logs, Level: hclog.Info})}
			err = r.reload()
			if (err == nil) != (tc.checkRule != nil) {
				t.Fatalf("reload: %v", err)
			}
			checkLogs(t, logs.String(), tc.expectLog, tc.expectNotLog)
			if tc.checkRule == nil {
				if len(setter.policies) != 0 {
					t.Fatal("the policy was replaced")
				}
				return
			}
			if len(setter.policies) != 1 {
				t.Fatalf("SetPolicy called %d times, want once", len(setter.policies))
			}
			rule, ok := setter.policies[0].RuleFor(frontendID)
			if !ok {
				t.Fatalf("rule for the frontend: %+v, %t", rule, ok)
			}
			tc.checkRule(t, rule)
		})
	}
}

func TestHealthHandler(t *testing.T) {
	var state healthState
	h := exchange.HealthHandler(state.ready)
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
	check("/readyz", http.StatusServiceUnavailable, "not ready\nthe token server has not started\n")
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
	check("/readyz", http.StatusServiceUnavailable, "not ready\nno JWT bundle: spiffebundle: no JWT bundle for trust domain \"example.org\"\n")

	state.sts.Store(sts.Server)
	check("/healthz", http.StatusOK, "ok\n")
	check("/readyz", http.StatusOK, "ready\n")
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
func startRun(t *testing.T, configSrc string) (logs *runLog, stop func() error) {
	t.Helper()
	path := writeConfig(t, configSrc)
	logs = &runLog{changed: make(chan struct{})}
	stop = testrun.Start(t, "run", 15*time.Second, func(ctx context.Context) error { return run(ctx, path, io.Discard, logs) })
	return logs, stop
}

// runLog is run's log, which tests wait on: each write wakes them.
type runLog struct {
	testrun.Buffer
	mu      sync.Mutex
	changed chan struct{} // closed, and replaced, at each write
}

func (l *runLog) Write(p []byte) (int, error) {
	n, err := l.Buffer.Write(p)
	l.mu.Lock()
	close(l.changed)
	l.changed = make(chan struct{})
	l.mu.Unlock()
	return n, err
}

// waitFor waits until the log contains want, failing the test after 10s,
// a guard against a hung test only.
func (l *runLog) waitFor(t *testing.T, want string) {
	t.Helper()
	guard := time.NewTimer(10 * time.Second)
	defer guard.Stop()
	for {
		l.mu.Lock()
		changed := l.changed
		l.mu.Unlock()
		if strings.Contains(l.String(), want) {
			return
		}
		select {
		case <-changed:
		case <-guard.C:
			t.Fatalf("timed out waiting for the log line %q:\n%s", want, l)
		}
	}
}

// The log lines that tell a test the server has reached a state.
const (
	// logHealthListening comes once the health listener accepts
	// connections.
	logHealthListening = "[INFO]  spiffe-sts.health: health listener started"
	// logServing comes once /readyz answers 200.
	logServing = "[INFO]  spiffe-sts: serving: "
)

// httpGet returns the status of GET url, or 0 when it cannot connect.
func httpGet(c *http.Client, url string) int {
	resp, err := c.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestRunStopsWhileWaitingForWorkloadAPI(t *testing.T) {
	socket := "unix://" + filepath.Join(t.TempDir(), "absent.sock")
	health := freeAddr(t)
	logs, stop := startRun(t, runConfig(t, socket, freeAddr(t), health))

	// The health listener is up before the SVID arrives.
	logs.waitFor(t, logHealthListening)
	if code := httpGet(http.DefaultClient, "http://"+health+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz: %d, want 200", code)
	}
	if code := httpGet(http.DefaultClient, "http://"+health+"/readyz"); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz: %d, want 503", code)
	}
	logs.waitFor(t, "[INFO]  spiffe-sts: waiting for the X509-SVID and bundles from the Workload API: address="+socket)
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

	logs.waitFor(t, logServing)
	if code := httpGet(http.DefaultClient, "http://"+health+"/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz: %d, want 200", code)
	}
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
	resp, err := client.PostForm("https://"+bind+protocol.PathToken, url.Values{
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
	// The signing key was created in the embedded ring, data_dir/keyring.json.
	dataDir := strings.Split(strings.Split(src, `data_dir            = "`)[1], `"`)[0]
	if _, err := os.Stat(filepath.Join(dataDir, filestore.FileName)); err != nil {
		t.Errorf("signing key: %v", err)
	}

	// The server's SVID rotates.
	rotated := ca.SVID(t, "spiffe://example.org/sts", 2*time.Hour)
	wl.SetSVID(rotated)
	logs.waitFor(t, "[INFO]  spiffe-sts: X509-SVID rotated: spiffe_id=spiffe://example.org/sts expires="+rotated.Certificates[0].NotAfter.UTC().Format(time.RFC3339))

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
	keys := filepath.Join(dataDir, keyring.LegacyKeysDir)
	if err := os.MkdirAll(keys, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(keys, "es256.pem"), []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	err := run(ctx, writeConfig(t, src), io.Discard, io.Discard)
	want := "signing keys: keyring: " + filepath.Join(keys, "es256.pem") + ": no PEM block"
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

// externalRunConfig is runConfig with external issuers and a policy that
// delegates to their users; blocks holds the external_issuer blocks.
func externalRunConfig(t *testing.T, workloadAPI, bind, health, blocks string) string {
	t.Helper()
	return runConfig(t, workloadAPI, bind, health) + blocks + `
policy "spiffe://example.org/ns/shop/sa/frontend" {
  audiences = ["spiffe://example.org/ns/shop/sa/orders"]
  delegation {
    issuers   = ["corp"]
    max_depth = 1
  }
}
`
}

// startJWKSServer serves the JWKS document doc over TLS and returns its
// URL and the PEM file of its certificate.
func startJWKSServer(t *testing.T, doc []byte) (jwksURL, caFile string) {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(doc)
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // handshakes that tests make fail
	srv.StartTLS()
	t.Cleanup(srv.Close)
	caFile = filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(caFile, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	return srv.URL + "/jwks", caFile
}

func TestRunExternalIssuers(t *testing.T) {
	ca := testca.New(t, "example.org")
	wl := fakeworkloadapi.Start(t, ca, ca.SVID(t, "spiffe://example.org/sts", time.Hour))
	doc, err := os.ReadFile("testdata/corp-jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	jwksURL, caFile := startJWKSServer(t, doc)
	blocks := fmt.Sprintf(`
external_issuer "corp" {
  issuer   = "https://idp.example.com"
  jwks_url = %q
  ca_file  = %q
  audience = "spiffe-sts"
}

external_issuer "k8s" {
  issuer     = "https://kubernetes.default.svc.cluster.local"
  jwks_file  = "testdata/corp-jwks.json"
  audience   = "spiffe-sts"
  algorithms = ["ES256"]
}
`, jwksURL, caFile)
	health := freeAddr(t)
	logs, stop := startRun(t, externalRunConfig(t, wl.Addr, freeAddr(t), health, blocks))

	logs.waitFor(t, logServing)
	if code := httpGet(http.DefaultClient, "http://"+health+"/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz: %d, want 200", code)
	}
	for _, want := range []string{
		"[INFO]  spiffe-sts: external issuer ready: external_issuer=corp issuer=https://idp.example.com\n",
		"[INFO]  spiffe-sts: external issuer ready: external_issuer=k8s issuer=https://kubernetes.default.svc.cluster.local\n",
		" rules=2\n",
	} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
	if err := stop(); err != nil {
		t.Fatalf("run: %v\n%s", err, logs)
	}
}

// TestRunExternalIssuerErrors checks that an external issuer whose keys
// cannot be loaded stops start-up, before the Workload API is reached.
func TestRunExternalIssuerErrors(t *testing.T) {
	doc, err := os.ReadFile("testdata/corp-jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	jwksURL, _ := startJWKSServer(t, doc)
	down := httptest.NewTLSServer(http.NotFoundHandler())
	downURL := down.URL + "/jwks"
	down.Close()
	missing := filepath.Join(t.TempDir(), "missing.pem")
	notPEM := filepath.Join(t.TempDir(), "not.pem")
	if err := os.WriteFile(notPEM, []byte("not PEM"), 0o600); err != nil {
		t.Fatal(err)
	}
	block := func(keys string) string {
		return "\nexternal_issuer \"corp\" {\n  issuer   = \"https://idp.example.com\"\n  audience = \"spiffe-sts\"\n" + keys + "}\n"
	}

	for _, tc := range []struct {
		name         string
		blocks       string
		expectErr    string // exact; CONFIG is the configuration file
		expectPrefix string // for errors with text of net/http or jwx; CONFIG as above
	}{
		{
			name:         "JWKS URL unreachable",
			blocks:       block(fmt.Sprintf("  jwks_url = %q\n", downURL)),
			expectPrefix: `external_issuer "corp": extissuer: corp: accesstoken: fetch JWKS: Get "` + downURL + `": dial tcp `,
		},
		{
			name:         "JWKS URL not trusted",
			blocks:       block(fmt.Sprintf("  jwks_url = %q\n", jwksURL)),
			expectPrefix: `external_issuer "corp": extissuer: corp: accesstoken: fetch JWKS: Get "` + jwksURL + `": tls: failed to verify certificate: x509: certificate signed by unknown authority`,
		},
		{
			name:      "CA file missing",
			blocks:    block(fmt.Sprintf("  jwks_url = %q\n  ca_file = %q\n", jwksURL, missing)),
			expectErr: `external_issuer "corp": ca_file: open ` + missing + `: no such file or directory`,
		},
		{
			name:      "CA file without certificates",
			blocks:    block(fmt.Sprintf("  jwks_url = %q\n  ca_file = %q\n", jwksURL, notPEM)),
			expectErr: `external_issuer "corp": ca_file ` + notPEM + `: no PEM certificate`,
		},
		{
			name:      "JWKS file missing",
			blocks:    block(fmt.Sprintf("  jwks_file = %q\n", missing)),
			expectErr: `CONFIG:19: external_issuer "corp": jwks_file: open ` + missing + `: no such file or directory`,
		},
		{
			name:      "JWKS file without a key for the algorithms",
			blocks:    block("  jwks_file = \"testdata/corp-jwks.json\"\n  algorithms = [\"RS256\"]\n"),
			expectErr: `CONFIG:19: external_issuer "corp": jwks_file: testdata/corp-jwks.json: extissuer: corp: JWKS: no key for the accepted algorithms (RS256)`,
		},
		{
			name:         "JWKS file not a JWKS",
			blocks:       block(fmt.Sprintf("  jwks_file = %q\n", notPEM)),
			expectPrefix: `CONFIG:19: external_issuer "corp": jwks_file: ` + notPEM + ` is not a usable JWKS document: `,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The Workload API socket does not exist: run must fail first.
			socket := "unix://" + filepath.Join(t.TempDir(), "absent.sock")
			path := writeConfig(t, externalRunConfig(t, socket, freeAddr(t), freeAddr(t), tc.blocks))
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			var logs testrun.Buffer
			err := run(ctx, path, io.Discard, &logs)
			switch {
			case err == nil:
				t.Fatalf("run succeeded\n%s", logs.String())
			case tc.expectErr != "" && err.Error() != strings.ReplaceAll(tc.expectErr, "CONFIG", path):
				t.Fatalf("run error:\n%s\nwant:\n%s", err, strings.ReplaceAll(tc.expectErr, "CONFIG", path))
			case tc.expectPrefix != "" && !strings.HasPrefix(err.Error(), strings.ReplaceAll(tc.expectPrefix, "CONFIG", path)):
				t.Fatalf("run error:\n%s\nwant prefix:\n%s", err, strings.ReplaceAll(tc.expectPrefix, "CONFIG", path))
			}
			if strings.Contains(logs.String(), "waiting for the X509-SVID") {
				t.Errorf("run waited for the Workload API:\n%s", logs.String())
			}
		})
	}
}
