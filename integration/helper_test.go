//go:build integration

package integration

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/integration/harness"
)

const (
	helperID = "spiffe://example.org/ns/prod/sa/helper"
	// ordersDNS is the DNS SAN of the resource server's X509-SVID, which
	// curl and Python verify (the SPIFFE ID is checked by Python too).
	ordersDNS       = "orders.example.org"
	helperTokenFile = "api.token"
)

var helperBin struct {
	once sync.Once
	path string
	err  error
}

// buildHelper builds spiffe-sts-helper once for the run.
func buildHelper(t *testing.T) string {
	t.Helper()
	helperBin.once.Do(func() {
		dir, err := os.MkdirTemp("", "sts-helper-bin")
		if err != nil {
			helperBin.err = err
			return
		}
		_ = os.Chmod(dir, 0o755)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		helperBin.path, helperBin.err = harness.BuildBinary(ctx, "./cmd/spiffe-sts-helper", dir, "spiffe-sts-helper")
	})
	if helperBin.err != nil {
		t.Fatal(helperBin.err)
	}
	return helperBin.path
}

// ordersServer is a resource server whose X509-SVID also carries
// ordersDNS, so that clients outside SPIFFE can check the name.
func (e *env) ordersServer(s *sts) (rs *resourceServer, port int) {
	e.t.Helper()
	rs = e.startResourceServerAs(s, "orders-dns", resourceServerID, apiAud, ordersDNS)
	u, err := url.Parse(rs.httpURL)
	if err != nil {
		e.t.Fatal(err)
	}
	if port, err = strconv.Atoi(u.Port()); err != nil {
		e.t.Fatal(err)
	}
	return rs, port
}

// waitFor polls cond every 100 ms until it holds, failing after d or if
// proc exits.
func waitFor(t *testing.T, d time.Duration, what string, proc *harness.Process, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		select {
		case <-proc.Exited():
			t.Fatalf("%s exited:\n%s", what, proc.Output())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not ready after %v:\n%s", what, d, proc.Output())
		}
	}
}

// runningHelper is a spiffe-sts-helper process.
type runningHelper struct {
	proc               *harness.Process
	bin, config        string
	out, sock, healthz string
}

// startHelper registers a copy of the helper as helperID with the
// X509-SVID TTL svidTTL, and runs it against s, with the token request
// timeout requestTimeout, until it has written its first set (0 for
// either default).
func (e *env) startHelper(s *sts, svidTTL, requestTimeout time.Duration) *runningHelper {
	e.t.Helper()
	path, err := harness.CopyExecutable(buildHelper(e.t), e.spire.Dir(), "spiffe-sts-helper")
	if err != nil {
		e.t.Fatal(err)
	}
	e.register(harness.Entry{SPIFFEID: helperID, Selectors: []string{"unix:path:" + path}, X509SVIDTTL: svidTTL})
	healthPort, err := harness.FreePort()
	if err != nil {
		e.t.Fatal(err)
	}
	// A socket path must stay under 108 bytes; t.TempDir can be longer.
	sockDir, err := os.MkdirTemp("", "helper")
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { os.RemoveAll(sockDir) })
	h := &runningHelper{bin: path, out: filepath.Join(e.t.TempDir(), "out"), sock: filepath.Join(sockDir, "h.sock"),
		healthz: fmt.Sprintf("127.0.0.1:%d", healthPort)}
	h.config = filepath.Join(e.t.TempDir(), "helper.hcl")
	timeoutLine := ""
	if requestTimeout > 0 {
		timeoutLine = fmt.Sprintf("timeout        = %q\n", requestTimeout.String())
	}
	cfg := fmt.Sprintf(`agent_address  = %q
issuer_url     = %q
sts_spiffe_id  = %q
output_dir     = %q
listen         = %q
health_address = %q
log_level      = "debug"
%s
token %q {
  audiences = [%q]
  scopes    = ["read"]
}
`, e.spire.WorkloadAPIAddr(), s.url, stsID, h.out, "unix://"+h.sock, h.healthz, timeoutLine, helperTokenFile, apiAud)
	if err := os.WriteFile(h.config, []byte(cfg), 0o600); err != nil {
		e.t.Fatal(err)
	}
	h.proc, err = harness.StartProcess(path, []string{"-config", h.config}, nil, filepath.Join(e.t.TempDir(), "helper.log"))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		_ = h.proc.Stop()
		if e.t.Failed() {
			e.t.Logf("spiffe-sts-helper log:\n%s", h.proc.Output())
		}
	})
	waitFor(e.t, 60*time.Second, "spiffe-sts-helper", h.proc, func() bool {
		_, err := os.Stat(filepath.Join(h.out, "current", helperTokenFile))
		return err == nil
	})
	return h
}

// current reads the current set in one pass: its version, certificate
// and token.
func (h *runningHelper) current(t *testing.T) (version string, leaf *x509.Certificate, token string) {
	t.Helper()
	version, err := os.Readlink(filepath.Join(h.out, "current"))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(h.out, version)
	certPEM, err := os.ReadFile(filepath.Join(dir, "svid.pem"))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, helperTokenFile))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(certPEM)
	if block == nil {
		t.Fatal("no certificate in svid.pem")
	}
	if leaf, err = x509.ParseCertificate(block.Bytes); err != nil {
		t.Fatal(err)
	}
	return version, leaf, string(raw)
}

// healthcheck runs the helper binary with -healthcheck.
func (h *runningHelper) healthcheck(t *testing.T) (int, string) {
	t.Helper()
	out, err := exec.Command(h.bin, "-config", h.config, "-healthcheck").CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), string(out)
	} else if err != nil {
		t.Fatal(err)
	}
	return 0, string(out)
}

// tokens asks the local endpoint on the Unix socket.
func (h *runningHelper) tokens(t *testing.T) map[string]any {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", h.sock)
	}}, Timeout: 5 * time.Second}
	resp, err := c.Get("http://helper/v1/tokens")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	return body
}

var figureLine = regexp.MustCompile(`^client=(curl|python) rotations=(\d+) calls=(\d+) failed=(\d+)$`)

// runClient runs a client script and returns its figures.
func runClient(t *testing.T, name string, args ...string) (line string, rotations, calls, failed int) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), name, args...)
	errPath := filepath.Join(t.TempDir(), "errors")
	cmd.Env = append(os.Environ(), "CURL_ERRORS="+errPath)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\n%s", name, err, stderr.String())
	}
	sc := bufio.NewScanner(strings.NewReader(string(out)))
	for sc.Scan() {
		if m := figureLine.FindStringSubmatch(sc.Text()); m != nil {
			rotations, _ = strconv.Atoi(m[2])
			calls, _ = strconv.Atoi(m[3])
			failed, _ = strconv.Atoi(m[4])
			if failed > 0 {
				errs, _ := os.ReadFile(errPath)
				t.Logf("%s errors:\n%s%s", m[1], stderr.String(), errs)
			}
			return sc.Text(), rotations, calls, failed
		}
	}
	t.Fatalf("%s printed no figure line:\n%s\n%s", name, out, stderr.String())
	return
}

// TestHelperClients runs spiffe-sts-helper with a 20 s X509-SVID and two
// clients that share no code with spiffe-sts, curl and a standard-library
// Python script. They read its files and call the resource server across
// at least three rotations: no call fails, and the resource server sees
// no token bound to another certificate than its connection's.
func TestHelperClients(t *testing.T) {
	t.Parallel()
	const wantRotations = 3
	const maxSeconds = 120
	e := newEnv(t, envOptions{})
	s := e.startSTS(0, "", policyRule)
	rs, port := e.ordersServer(s)
	h := e.startHelper(s, 20*time.Second, 0)

	// 1. The files and the local endpoint agree on the binding.
	_, leaf, token := h.current(t)
	if !accesstoken.BoundTo(mustClaims(t, token), leaf) {
		t.Fatal("the token on disk is not bound to the certificate on disk")
	}
	body := h.tokens(t)
	if body["x5t#S256"] != accesstoken.Thumbprint(leaf) {
		// A rotation in between: read both again.
		_, leaf, _ = h.current(t)
		if body = h.tokens(t); body["x5t#S256"] != accesstoken.Thumbprint(leaf) {
			t.Fatalf("the endpoint serves x5t#S256 %v, the certificate on disk is %s", body["x5t#S256"], accesstoken.Thumbprint(leaf))
		}
	}
	if code, out := h.healthcheck(t); code != 0 {
		t.Fatalf("-healthcheck: exit %d: %s", code, out)
	}

	// 2. Both clients in a loop, concurrently, across the rotations.
	dir, err := filepath.Abs("testdata/helper")
	if err != nil {
		t.Fatal(err)
	}
	type result struct {
		line                     string
		rotations, calls, failed int
	}
	results := make([]result, 2)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		u := fmt.Sprintf("https://%s:%d/orders", ordersDNS, port)
		r := &results[0]
		r.line, r.rotations, r.calls, r.failed = runClient(t, "sh", filepath.Join(dir, "curl-loop.sh"),
			h.out, helperTokenFile, u, ordersDNS, strconv.Itoa(port), strconv.Itoa(wantRotations), strconv.Itoa(maxSeconds))
	}()
	go func() {
		defer wg.Done()
		r := &results[1]
		r.line, r.rotations, r.calls, r.failed = runClient(t, "python3", filepath.Join(dir, "call.py"),
			h.out, helperTokenFile, fmt.Sprintf("127.0.0.1:%d", port), ordersDNS, resourceServerID, strconv.Itoa(wantRotations), strconv.Itoa(maxSeconds))
	}()
	wg.Wait()
	for _, r := range results {
		fmt.Println(r.line)
		if r.failed != 0 {
			t.Errorf("%s: calls failed", r.line)
		}
		if r.rotations < wantRotations {
			t.Errorf("%s: fewer than %d rotations", r.line, wantRotations)
		}
		if r.calls < 20 {
			t.Errorf("%s: too few calls", r.line)
		}
	}
	accepted, mismatches := rs.stats(t, e.source())
	t.Logf("resource server: accepted=%d binding_mismatches=%d", accepted, mismatches)
	if mismatches != 0 {
		t.Errorf("%d binding mismatches", mismatches)
	}
	// 3. Old versions are removed: the current one and the one before.
	entries, err := os.ReadDir(h.out)
	if err != nil {
		t.Fatal(err)
	}
	versions := 0
	for _, en := range entries {
		if strings.HasPrefix(en.Name(), "..v") {
			versions++
		}
	}
	if versions > 2 {
		t.Errorf("%d versions kept in %s, want at most 2", versions, h.out)
	}
}

// TestHelperSTSOutage stops the STS for longer than a token refresh: the
// set on disk keeps working while its token is valid (calls with it
// succeed, health stays ready) and the helper writes a fresh token once
// the STS is back.
func TestHelperSTSOutage(t *testing.T) {
	t.Parallel()
	const (
		tokenTTL = 30 * time.Second
		// The client library re-sends a token request while the STS is
		// away, for up to requestTimeout: the outage outlasts the refresh
		// (at 2/3 of tokenTTL) by more than that, so a refresh fails and is
		// logged, and ends before the token's last usable seconds.
		requestTimeout = 2 * time.Second
		outage         = 25 * time.Second
	)
	policy := strings.Replace(policyRule, `max_ttl        = "2m"`, fmt.Sprintf("max_ttl = %q", tokenTTL.String()), 1)
	e := newEnv(t, envOptions{})
	s := e.startSTS(0, "", policy)
	rs, port := e.ordersServer(s)
	h := e.startHelper(s, 0, requestTimeout)
	src := e.source()
	_ = rs

	curl := func(t *testing.T) error {
		t.Helper()
		d, err := filepath.EvalSymlinks(filepath.Join(h.out, "current"))
		if err != nil {
			return err
		}
		tok, err := os.ReadFile(filepath.Join(d, helperTokenFile))
		if err != nil {
			return err
		}
		out, err := exec.Command("curl", "-sS", "--fail", "-o", "/dev/null", "--max-time", "5",
			"--cert", filepath.Join(d, "svid.pem"), "--key", filepath.Join(d, "svid_key.pem"), "--cacert", filepath.Join(d, "svid_bundle.pem"),
			"--resolve", fmt.Sprintf("%s:%d:127.0.0.1", ordersDNS, port), "-H", "Authorization: Bearer "+string(tok),
			fmt.Sprintf("https://%s:%d/orders", ordersDNS, port)).CombinedOutput()
		if err != nil {
			return fmt.Errorf("curl: %v: %s", err, out)
		}
		return nil
	}

	// 1. Wait for a refresh, so the outage starts with a fresh token.
	v0, _, tok0 := h.current(t)
	deadline := time.Now().Add(tokenTTL + 10*time.Second)
	for {
		if v, _, _ := h.current(t); v != v0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no refresh within the token lifetime")
		}
		time.Sleep(100 * time.Millisecond)
	}
	v1, _, tok1 := h.current(t)
	if tok1 == tok0 {
		t.Fatal("the new version has the same token")
	}
	claims := mustClaims(t, tok1)
	expiry := time.Unix(claims.Expiry, 0)

	// 2. Stop the STS for longer than a refresh; calls keep working on the
	// set, which does not change.
	stsURL, _ := url.Parse(s.url)
	stsPort, _ := strconv.Atoi(stsURL.Port())
	if err := s.proc.Stop(); err != nil {
		t.Logf("stopping spiffe-sts: %v", err)
	}
	stopped := time.Now()
	calls, failed := 0, 0
	for time.Since(stopped) < outage {
		calls++
		if err := curl(t); err != nil {
			failed++
			t.Errorf("call during the outage: %v", err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if v, _, _ := h.current(t); v != v1 {
		t.Fatal("the set changed while the STS was down")
	}
	if code, out := h.healthcheck(t); code != 0 {
		t.Errorf("-healthcheck during the outage, with a valid set: exit %d: %s", code, out)
	}
	if !strings.Contains(h.proc.Output(), "update failed; the current set stays") {
		t.Error("the helper logged no failed refresh during the outage")
	}

	// 3. The STS comes back on the same port with the same keys; the
	// helper writes a fresh token before the old one expires.
	e.startSTS(stsPort, s.dataDir, policy)
	back := time.Now()
	for {
		if v, _, _ := h.current(t); v != v1 {
			break
		}
		if time.Now().After(expiry) {
			t.Fatalf("no fresh token %v after the STS came back, and the old one has expired", time.Since(back).Round(time.Millisecond))
		}
		calls++
		if err := curl(t); err != nil {
			failed++
			t.Errorf("call before the recovery: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	recovered := time.Since(back)
	_, leaf, tok2 := h.current(t)
	if !accesstoken.BoundTo(mustClaims(t, tok2), leaf) {
		t.Fatal("the recovered token is not bound to the certificate")
	}
	for range 5 {
		calls++
		if err := curl(t); err != nil {
			failed++
			t.Errorf("call after the recovery: %v", err)
		}
	}
	_, mismatches := rs.stats(t, src)
	fmt.Printf("outage=%v recovered_after=%v calls=%d failed=%d\n", outage, recovered.Round(100*time.Millisecond), calls, failed)
	if failed != 0 || mismatches != 0 {
		t.Errorf("%d calls failed, %d binding mismatches", failed, mismatches)
	}
}
