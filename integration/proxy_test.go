//go:build integration

package integration

import (
	"bufio"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/exchange/exchangeclient"
	"github.com/spiffe-sts/spiffe-sts/integration/harness"
	"github.com/spiffe-sts/spiffe-sts/spiffeid/forwarded"
)

const (
	// proxyID is the ingress HAProxy's identity, the trusted proxy.
	proxyID = "spiffe://example.org/proxy"
	// proxyThiefID is a workload with its own valid SVID that replays
	// and forges (the policy lets it get tokens of its own).
	proxyThiefID = "spiffe://example.org/ns/prod/sa/thief"
	// stsDNS is the DNS SAN of spiffe-sts's X509-SVID, which HAProxy
	// checks (it cannot check a SPIFFE ID).
	stsDNS = "sts.example.org"
	// proxyPEM is the helper's combined file: HAProxy's crt.
	proxyPEM = "proxy.pem"
	// untrustedHop is the description of a refused forwarding header.
	untrustedHop = "a forwarded client certificate is accepted only from a trusted proxy"
)

// proxyHelper is a spiffe-sts-helper writing an X509-SVID (no tokens) for
// HAProxy, running as the unprivileged user.
type proxyHelper struct {
	proc *harness.Process
	out  string // output_dir; read through out/current
}

func (h *proxyHelper) cert() string   { return filepath.Join(h.out, "current", proxyPEM) }
func (h *proxyHelper) bundle() string { return filepath.Join(h.out, "current", "svid_bundle.pem") }

// startProxyHelper registers a copy of the helper named name as id with
// the X509-SVID TTL ttl (0 for the default) and runs it as runAs, writing
// the SVID, key, bundle and combined file and sending SIGUSR2 to the
// process in pidFile (HAProxy's master) on every new set. It returns once
// the first set is written.
func (e *env) startProxyHelper(name, id, runAs, pidFile string, ttl time.Duration) *proxyHelper {
	e.t.Helper()
	path, err := harness.CopyExecutable(buildHelper(e.t), e.spire.Dir(), name)
	if err != nil {
		e.t.Fatal(err)
	}
	e.register(harness.Entry{SPIFFEID: id, Selectors: []string{"unix:path:" + path}, X509SVIDTTL: ttl})
	dir, err := harness.MkdirFor(runAs, "proxyhelper")
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { os.RemoveAll(dir) })
	h := &proxyHelper{out: filepath.Join(dir, "out")}
	config := filepath.Join(dir, "helper.hcl")
	cfg := fmt.Sprintf(`agent_address = %q
output_dir    = %q
combined_file = %q
pid_file_name = %q
renew_signal  = "SIGUSR2"
log_level     = "debug"
`, e.spire.WorkloadAPIAddr(), h.out, proxyPEM, pidFile)
	if err := os.WriteFile(config, []byte(cfg), 0o644); err != nil {
		e.t.Fatal(err)
	}
	h.proc, err = harness.StartProcessAs(runAs, path, []string{"-config", config}, nil, filepath.Join(e.t.TempDir(), name+".log"))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		_ = h.proc.Stop()
		if e.t.Failed() {
			e.t.Logf("%s log:\n%s", name, h.proc.Output())
		}
	})
	waitFor(e.t, 60*time.Second, name, h.proc, func() bool {
		_, err := os.Stat(h.cert())
		return err == nil
	})
	return h
}

// startHAProxy starts HAProxy as runAs in dir with the proxies.
func (e *env) startHAProxy(runAs, dir string, ingress []harness.HAProxyIngress, egress []harness.HAProxyEgress) *harness.HAProxy {
	e.t.Helper()
	hp, err := harness.StartHAProxy(e.t.Context(), harness.HAProxyOptions{Dir: dir, RunAs: runAs, Ingress: ingress, Egress: egress})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		_ = hp.Stop()
		if e.t.Failed() {
			e.t.Logf("haproxy log:\n%s", hp.Output())
		}
	})
	return hp
}

// sourceFor returns an X509Source of this test process that presents its
// SVID for id (the process is registered under several IDs), once the
// agent has issued it.
func (e *env) sourceFor(id string) *workloadapi.X509Source {
	e.t.Helper()
	want := spiffeid.RequireFromString(id)
	ctx, cancel := context.WithTimeout(e.t.Context(), 30*time.Second)
	defer cancel()
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(e.spire.WorkloadAPIAddr())),
		workloadapi.WithDefaultX509SVIDPicker(func(svids []*x509svid.SVID) *x509svid.SVID {
			for _, s := range svids {
				if s.ID == want {
					return s
				}
			}
			return svids[0]
		}))
	if err != nil {
		e.t.Fatalf("X509Source: %v", err)
	}
	e.t.Cleanup(func() { _ = src.Close() })
	for {
		if svid, err := src.GetX509SVID(); err == nil && svid.ID == want {
			return src
		}
		select {
		case <-ctx.Done():
			e.t.Fatalf("no X509-SVID for %s: %v", id, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// mtlsClient presents src's SVID and accepts only the server serverID.
func mtlsClient(src *workloadapi.X509Source, serverID string) *http.Client {
	return &http.Client{
		Transport: &http.Transport{TLSClientConfig: tlsconfig.MTLSClientConfig(src, src, tlsconfig.AuthorizeID(spiffeid.RequireFromString(serverID)))},
		Timeout:   15 * time.Second,
	}
}

// clientCertHeader is the RFC 9440 §2.2 Client-Cert value of c.
func clientCertHeader(c *x509.Certificate) string {
	return ":" + base64.StdEncoding.EncodeToString(c.Raw) + ":"
}

// send sends a request with the headers (name, value pairs) and returns
// the response, whose body the caller closes.
func send(t *testing.T, c *http.Client, method, url string, body io.Reader, headers map[string]string) *http.Response {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// withHeader returns headers with one more.
func withHeader(headers map[string]string, name, value string) map[string]string {
	out := map[string]string{name: value}
	for k, v := range headers {
		out[k] = v
	}
	return out
}

// callOrders GETs url with the bearer token and extra headers, and
// returns the status, the WWW-Authenticate challenge and the body.
func callOrders(t *testing.T, c *http.Client, url, token string, headers map[string]string) (int, string, string) {
	t.Helper()
	resp := send(t, c, http.MethodGet, url, nil, withHeader(headers, "Authorization", "Bearer "+token))
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("WWW-Authenticate"), string(body)
}

// postToken sends a client_credentials request for apiAud to tokenURL
// with extra headers and decodes the JSON answer.
func postToken(t *testing.T, c *http.Client, tokenURL string, headers map[string]string) (int, map[string]any) {
	t.Helper()
	form := strings.NewReader(url.Values{"grant_type": {"client_credentials"}, "audience": {apiAud}}.Encode())
	resp := send(t, c, http.MethodPost, tokenURL, form, withHeader(headers, "Content-Type", "application/x-www-form-urlencoded"))
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("token response is not JSON: %v", err)
	}
	return resp.StatusCode, body
}

// auditRecords reads the audit file's records.
func auditRecords(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		var rec map[string]any
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatalf("audit line is not JSON: %v", err)
		}
		out = append(out, rec)
	}
	return out
}

// proxyDeployment is spiffe-sts and the example resource server, each
// behind the ingress HAProxy, which presents its own SVID (proxyID) on
// both sides.
type proxyDeployment struct {
	sts       *sts
	rs        *resourceServer
	auditPath string
	// stsIngress and ordersIngress are the proxy's listeners.
	stsIngress, ordersIngress string
	haproxy                   *harness.HAProxy
}

// startProxyDeployment starts the deployment of TestProxyIngress.
func (e *env) startProxyDeployment() *proxyDeployment {
	e.t.Helper()
	runAs, err := harness.Unprivileged()
	if err != nil {
		e.t.Fatal(err)
	}
	d := &proxyDeployment{auditPath: filepath.Join(e.t.TempDir(), "audit.log")}
	// 1. spiffe-sts believes forwarded certificates from proxyID only.
	d.sts = e.startSTSWith(harness.STSOptions{
		Policy:    policyRule,
		ServerHCL: fmt.Sprintf("  trusted_proxies = [%q]\n  forwarded_format = \"client-cert\"", proxyID),
		ExtraHCL:  fmt.Sprintf("audit {\n  path = %q\n}\n", d.auditPath),
	})
	// 2. So does the resource server.
	d.rs = e.startResourceServerArgs(d.sts, "orders-behind-proxy", resourceServerID, apiAud, []string{ordersDNS},
		[]string{"-trusted-proxies", proxyID, "-forwarded-format", "client-cert"})
	// 3. The proxy's SVID from SPIRE, through the helper, then HAProxy.
	dir, err := harness.MkdirFor(runAs, "haproxy")
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { os.RemoveAll(dir) })
	h := e.startProxyHelper("proxy-helper", proxyID, runAs, filepath.Join(dir, "haproxy.pid"), 0)
	ports := make([]int, 2)
	for i := range ports {
		if ports[i], err = harness.FreePort(); err != nil {
			e.t.Fatal(err)
		}
	}
	d.stsIngress = fmt.Sprintf("127.0.0.1:%d", ports[0])
	d.ordersIngress = fmt.Sprintf("127.0.0.1:%d", ports[1])
	d.haproxy = e.startHAProxy(runAs, dir, []harness.HAProxyIngress{
		{Name: "sts_ingress", Listen: d.stsIngress, Server: d.sts.Addr, ServerName: stsDNS, Cert: h.cert(), CA: h.bundle()},
		{Name: "orders_ingress", Listen: d.ordersIngress, Server: strings.TrimPrefix(d.rs.httpURL, "https://"), ServerName: ordersDNS, Cert: h.cert(), CA: h.bundle()},
	}, nil)
	return d
}

// TestProxyIngress puts a real HAProxy, with its own SVID from SPIRE,
// in front of spiffe-sts and of the example resource server. Through it a
// client exchanges its JWT-SVID for a token bound to its own certificate
// and uses it; a thief replaying the token through it is refused; a
// forwarding header sent directly by a workload that is not a trusted
// proxy is refused by both servers; one sent to the proxy is replaced by
// the proxy's own.
func TestProxyIngress(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{stsDNSNames: []string{stsDNS}})
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	e.register(harness.Entry{SPIFFEID: proxyThiefID, Selectors: []string{"unix:path:" + self}})
	d := e.startProxyDeployment()
	clientSrc, thiefSrc := e.sourceFor(clientID), e.sourceFor(proxyThiefID)
	clientLeaf, thiefLeaf := leafOf(t, clientSrc), leafOf(t, thiefSrc)
	viaProxy := func(src *workloadapi.X509Source) *http.Client { return mtlsClient(src, proxyID) }
	ordersViaProxy := "https://" + d.ordersIngress + "/orders"

	// 1. The client exchanges its JWT-SVID through the proxy: the token is
	// bound to the client's certificate, not the proxy's, and the audit
	// record and the log name both.
	var token string
	t.Run("exchange through the proxy", func(t *testing.T) {
		c, err := exchangeclient.New(t.Context(), exchangeclient.WithIssuerURL("https://"+d.stsIngress),
			exchangeclient.WithX509Source(clientSrc), exchangeclient.WithServerID(spiffeid.RequireFromString(proxyID)))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		wl, err := workloadapi.New(t.Context(), workloadapi.WithAddr(e.spire.WorkloadAPIAddr()))
		if err != nil {
			t.Fatal(err)
		}
		defer wl.Close()
		jwt, err := wl.FetchJWTSVID(t.Context(), jwtsvid.Params{Audience: stsID, Subject: spiffeid.RequireFromString(clientID)})
		if err != nil {
			t.Fatal(err)
		}
		tok, err := c.Exchange(t.Context(), exchangeclient.Request{SubjectToken: jwt.Marshal(), Audience: []string{apiAud}})
		if err != nil {
			t.Fatalf("exchange through the proxy: %v", err)
		}
		token = tok.AccessToken
		claims := mustClaims(t, token)
		if got, want := claims.Confirmation.X5TS256, accesstoken.Thumbprint(clientLeaf); got != want {
			t.Fatalf("cnf x5t#S256 %s, want the client's leaf %s", got, want)
		}
		if claims.Subject != clientID || claims.ClientID != clientID {
			t.Errorf("sub %q client_id %q, want %s", claims.Subject, claims.ClientID, clientID)
		}
		var found bool
		for _, rec := range auditRecords(t, d.auditPath) {
			if rec["outcome"] == "issued" && rec["jti"] == claims.JWTID {
				found = true
				if rec["caller"] != clientID || rec["proxy_spiffe_id"] != proxyID || rec["x5t_s256"] != accesstoken.Thumbprint(clientLeaf) {
					t.Errorf("audit record caller %v proxy %v x5t %v; want %s via %s", rec["caller"], rec["proxy_spiffe_id"], rec["x5t_s256"], clientID, proxyID)
				}
			}
		}
		if !found {
			t.Error("no audit record of the issued token")
		}
		logged := false
		for _, line := range strings.Split(d.sts.Output(), "\n") {
			if strings.Contains(line, "token issued") && strings.Contains(line, claims.JWTID) {
				logged = strings.Contains(line, "proxy_spiffe_id="+proxyID) && strings.Contains(line, clientID)
			}
		}
		if !logged {
			t.Errorf("the log line of the issued token does not name the proxy and the client:\n%s", d.sts.Output())
		}
	})
	if token == "" {
		t.FailNow()
	}

	// 2. The client uses it through the proxy in front of the resource
	// server.
	t.Run("use through the proxy", func(t *testing.T) {
		code, challenge, body := callOrders(t, viaProxy(clientSrc), ordersViaProxy, token, nil)
		if code != http.StatusOK {
			t.Fatalf("status %d (%s): %s", code, challenge, body)
		}
		if !strings.Contains(body, `"client_id":"`+clientID+`"`) {
			t.Errorf("body %s", body)
		}
	})

	// 3. A thief with its own valid SVID replays it through the proxy:
	// the proxy forwards the thief's certificate, which the token is not
	// bound to.
	t.Run("replay by a thief through the proxy", func(t *testing.T) {
		code, challenge, _ := callOrders(t, viaProxy(thiefSrc), ordersViaProxy, token, nil)
		if code != http.StatusUnauthorized || !strings.Contains(challenge, `error="invalid_token"`) {
			t.Fatalf("status %d, challenge %q; want 401 invalid_token", code, challenge)
		}
	})

	// 4. The thief forges the header directly, not through the proxy,
	// naming the client's (public) certificate: both servers refuse it,
	// and neither serves the request as the thief itself.
	t.Run("forged header sent directly", func(t *testing.T) {
		forged := map[string]string{forwarded.HeaderClientCert: clientCertHeader(clientLeaf)}
		code, challenge, _ := callOrders(t, mtlsClient(thiefSrc, resourceServerID), d.rs.httpURL+"/orders", token, forged)
		if code != http.StatusUnauthorized || !strings.Contains(challenge, `error="invalid_token"`) || !strings.Contains(challenge, untrustedHop) {
			t.Errorf("resource server: status %d, challenge %q; want 401 invalid_token %q", code, challenge, untrustedHop)
		}
		// Its own token, with the header, is refused too: never served as the hop.
		status, body := postToken(t, mtlsClient(thiefSrc, stsID), d.sts.url+"/token", forged)
		if status != http.StatusUnauthorized || body["error"] != "invalid_client" || body["error_description"] != untrustedHop {
			t.Errorf("spiffe-sts: status %d body %v; want 401 invalid_client %q", status, body, untrustedHop)
		}
		status, body = postToken(t, mtlsClient(thiefSrc, stsID), d.sts.url+"/token",
			map[string]string{forwarded.HeaderXFCC: "Cert=x"})
		if status != http.StatusUnauthorized || body["error"] != "invalid_client" || body["error_description"] != untrustedHop {
			t.Errorf("spiffe-sts, XFCC: status %d body %v; want 401 invalid_client %q", status, body, untrustedHop)
		}
	})

	// 5. A forged header sent to the proxy is replaced by the proxy's
	// own: the thief is served as the thief, never as the client.
	t.Run("forged header sent to the proxy", func(t *testing.T) {
		forged := map[string]string{forwarded.HeaderClientCert: clientCertHeader(clientLeaf), forwarded.HeaderXFCC: "Cert=x"}
		code, challenge, _ := callOrders(t, viaProxy(thiefSrc), ordersViaProxy, token, forged)
		if code != http.StatusUnauthorized || !strings.Contains(challenge, `error="invalid_token"`) {
			t.Errorf("resource server: status %d, challenge %q; want 401 invalid_token (bound to another certificate)", code, challenge)
		}
		status, body := postToken(t, viaProxy(thiefSrc), "https://"+d.stsIngress+"/token", forged)
		if status != http.StatusOK {
			t.Fatalf("spiffe-sts through the proxy: status %d body %v", status, body)
		}
		raw, _ := body["access_token"].(string)
		claims := mustClaims(t, raw)
		if claims.Subject != proxyThiefID || claims.Confirmation.X5TS256 != accesstoken.Thumbprint(thiefLeaf) {
			t.Errorf("token for sub %q bound to %s; want %s bound to the thief's certificate %s",
				claims.Subject, claims.Confirmation.X5TS256, proxyThiefID, accesstoken.Thumbprint(thiefLeaf))
		}
	})

	if _, mismatches := d.rs.stats(t, clientSrc); mismatches != 0 {
		t.Errorf("the resource server accepted %d tokens bound to another certificate", mismatches)
	}
}

// currentThumbprint is the x5t#S256 of the certificate the helper has
// written now.
func (h *proxyHelper) currentThumbprint(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(h.out, "current", "svid.pem"))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(raw)
	if block == nil {
		t.Fatal("no certificate in svid.pem")
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return accesstoken.Thumbprint(leaf)
}

// egressDeployment is spiffe-sts and the example resource server, and
// beside the client an egress HAProxy that originates mTLS with the
// client's X509-SVID (20 s TTL), written by the helper, which reloads
// HAProxy on every new one. The client holds no certificate
// (exchangeclient.WithSidecar): its Tokens exchange through the proxy.
type egressDeployment struct {
	e       *env
	helper  *proxyHelper
	rs      *resourceServer
	haproxy *harness.HAProxy
	tokens  *exchangeclient.Tokens
	rebinds atomic.Int64
}

// startEgressDeployment starts the deployment with the resource server's
// extra arguments rsArgs. The proxy routes to the STS, to the resource
// server's HTTPS listener and, over HTTP/2, to its gRPC listener.
func startEgressDeployment(t *testing.T, rsArgs ...string) *egressDeployment {
	t.Helper()
	runAs, err := harness.Unprivileged()
	if err != nil {
		t.Fatal(err)
	}
	d := &egressDeployment{e: newEnv(t, envOptions{stsDNSNames: []string{stsDNS}})}
	s := d.e.startSTS(0, "", policyRule)
	d.rs = d.e.startResourceServerArgs(s, "orders-dns", resourceServerID, apiAud, []string{ordersDNS}, rsArgs)
	dir, err := harness.MkdirFor(runAs, "haproxy")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	// The helper has the client's identity: the proxy presents the
	// client's SVID, and the client itself never holds it.
	d.helper = d.e.startProxyHelper("egress-helper", clientID, runAs, filepath.Join(dir, "haproxy.pid"), 20*time.Second)
	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	egress := fmt.Sprintf("127.0.0.1:%d", port)
	stsURL, _ := url.Parse(s.url)
	rsURL, _ := url.Parse(d.rs.httpURL)
	d.haproxy = d.e.startHAProxy(runAs, dir, nil, []harness.HAProxyEgress{{
		Name: "egress", Listen: egress, Cert: d.helper.cert(), CA: d.helper.bundle(),
		Routes: []harness.HAProxyRoute{
			{Host: stsURL.Host, Server: s.Addr, ServerName: stsDNS},
			{Host: rsURL.Host, Server: rsURL.Host, ServerName: ordersDNS},
			{Host: d.rs.grpcAddr, Server: d.rs.grpcAddr, ServerName: ordersDNS, HTTP2: true},
		},
	}})

	c, err := exchangeclient.New(t.Context(), exchangeclient.WithIssuerURL(s.url), exchangeclient.WithSidecar("http://"+egress))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	d.tokens, err = c.NewTokens(t.Context(), exchangeclient.Request{Audience: []string{apiAud}},
		exchangeclient.WithEvents(func(ev exchangeclient.Event) {
			if ev.Kind == exchangeclient.EventRebound {
				d.rebinds.Add(1)
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = d.tokens.Close() })
	return d
}

// callAcrossRotations calls call every 200 ms until the proxy's SVID has
// rotated wantRotations times (at most for limit), then five more times
// once HAProxy has certainly loaded the last one. It prints the figures,
// with prefix before them, and fails the test unless every call of at
// least 20 succeeded across the rotations, the client re-bound its token,
// and the resource server accepted no token bound to another certificate.
func (d *egressDeployment) callAcrossRotations(t *testing.T, prefix string, call func() error) {
	t.Helper()
	const (
		wantRotations = 3
		limit         = 150 * time.Second
	)
	rotations, calls, failed := 0, 0, 0
	try := func() {
		calls++
		if err := call(); err != nil {
			failed++
			t.Errorf("call %d: %v", calls, err)
		}
	}
	last := d.helper.currentThumbprint(t)
	deadline := time.Now().Add(limit)
	for rotations < wantRotations && time.Now().Before(deadline) {
		try()
		if now := d.helper.currentThumbprint(t); now != last {
			rotations++
			last = now
		}
		time.Sleep(200 * time.Millisecond)
	}
	for range 5 {
		try()
	}
	fmt.Printf("%srotations=%d calls=%d failed=%d\n", prefix, rotations, calls, failed)
	t.Logf("rebinds=%d haproxy_loads=%d", d.rebinds.Load(), d.haproxy.Reloads())
	if rotations < wantRotations {
		t.Errorf("%d rotations in %v, want at least %d", rotations, limit, wantRotations)
	}
	if failed != 0 || calls < 20 {
		t.Errorf("%d of %d calls failed (want none, of at least 20)", failed, calls)
	}
	if d.rebinds.Load() == 0 {
		t.Error("the client never re-bound its token: the rotations did not reach the proxy")
	}
	if _, mismatches := d.rs.stats(t, d.e.source()); mismatches != 0 {
		t.Errorf("the resource server accepted %d tokens bound to another certificate", mismatches)
	}
}

// TestProxyEgressRotation runs the client behind the egress HAProxy of
// egressDeployment: it exchanges and calls the resource server over HTTP
// through the proxy (Tokens.RoundTripper), and keeps succeeding across at
// least three rotations, re-binding its token when the resource server
// reports a binding mismatch.
func TestProxyEgressRotation(t *testing.T) {
	t.Parallel()
	d := startEgressDeployment(t)
	client := &http.Client{Transport: d.tokens.RoundTripper(tlsconfig.AuthorizeAny()), Timeout: 15 * time.Second}
	d.callAcrossRotations(t, "", func() error {
		resp, err := client.Get(d.rs.httpURL + "/orders")
		if err != nil {
			return err
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %d (%s): %s", resp.StatusCode, resp.Header.Get("WWW-Authenticate"), body)
		}
		return nil
	})
}

// TestProxyEgressRotationGRPC is TestProxyEgressRotation over gRPC: the
// client calls the resource server's gRPC health service through the
// proxy (Tokens.GRPCDialOptions: h2c to HAProxy, HTTP/2 over mTLS with
// the client's SVID to the server, which checks tokens with grpcauth), a
// unary Check every time and a Watch stream every fifth, across at least
// three rotations. The resource server keeps its connections for the
// test's length (-max-connection-age): the proxy's SVID changes by
// reloads, which replace the proxy's connections.
func TestProxyEgressRotationGRPC(t *testing.T) {
	t.Parallel()
	d := startEgressDeployment(t, "-max-connection-age", "1h")
	conn, err := grpc.NewClient(d.rs.grpcAddr, d.tokens.GRPCDialOptions(nil)...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	health := healthpb.NewHealthClient(conn)
	n := 0
	d.callAcrossRotations(t, "transport=grpc ", func() error {
		ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
		defer cancel()
		n++
		if n%5 != 0 {
			_, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
			return err
		}
		stream, err := health.Watch(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			return err
		}
		if resp, err := stream.Recv(); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("watch: %v %v", resp, err)
		}
		return nil
	})
}
