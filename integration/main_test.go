//go:build integration

package integration

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/exchange/exchangeclient"
	"github.com/spiffe-sts/spiffe-sts/integration/harness"
)

// Identities used across the tests.
const (
	stsID      = "spiffe://example.org/sts"
	clientID   = "spiffe://example.org/ns/prod/sa/client"
	deniedID   = "spiffe://example.org/ns/dev/sa/denied"
	apiAud     = "spiffe://example.org/api"
	otherAud   = "spiffe://example.org/other"
	policyRule = `
policy "spiffe://example.org/ns/prod/sa/*" {
  audiences      = ["spiffe://example.org/api"]
  scopes         = ["read", "write"]
  default_scopes = ["read"]
  max_ttl        = "2m"
}
`
)

// binaries built once for the whole run.
var bin struct{ sts, stsctl, resourceServer, oidcIssuer string }

func TestMain(m *testing.M) {
	os.Exit(func() int {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
		defer cancel()
		dir, err := os.MkdirTemp("", "sts-bin")
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer os.RemoveAll(dir)
		_ = os.Chmod(dir, 0o755)
		logf := func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }
		if _, err := harness.SPIREBinaries(ctx, logf); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if bin.sts, err = harness.BuildBinary(ctx, "./cmd/spiffe-sts", dir, "spiffe-sts"); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if bin.stsctl, err = harness.BuildBinary(ctx, "./cmd/stsctl", dir, "stsctl"); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if bin.resourceServer, err = harness.BuildBinary(ctx, "./examples/resource-server", dir, "resource-server"); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		if bin.oidcIssuer, err = harness.BuildBinary(ctx, "./integration/oidcissuer", dir, "oidcissuer"); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		return m.Run()
	}())
}

// env is one test's SPIRE deployment with spiffe-sts registered in it and
// this test process registered as clientID.
type env struct {
	t     *testing.T
	spire *harness.SPIRE
	// stsBin is this deployment's copy of spiffe-sts, registered as stsID.
	stsBin string
}

type envOptions struct {
	// stsSVIDTTL, clientSVIDTTL and clientJWTTTL override the
	// registration TTLs.
	stsSVIDTTL, clientSVIDTTL, clientJWTTTL time.Duration
	// stsDNSNames are DNS SANs for spiffe-sts's X509-SVID, for proxies
	// that check the server's host name.
	stsDNSNames []string
}

func newEnv(t *testing.T, opts envOptions) *env {
	t.Helper()
	s := harness.StartT(t, harness.Options{})
	e := &env{t: t, spire: s}
	var err error
	if e.stsBin, err = harness.CopyExecutable(bin.sts, s.Dir(), "spiffe-sts"); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	e.register(harness.Entry{SPIFFEID: stsID, Selectors: []string{"unix:path:" + e.stsBin}, X509SVIDTTL: opts.stsSVIDTTL, DNSNames: opts.stsDNSNames})
	e.register(harness.Entry{SPIFFEID: clientID, Selectors: []string{"unix:path:" + self}, X509SVIDTTL: opts.clientSVIDTTL, JWTSVIDTTL: opts.clientJWTTTL})
	return e
}

func (e *env) register(entry harness.Entry) {
	e.t.Helper()
	if err := e.spire.Register(e.t.Context(), entry); err != nil {
		e.t.Fatal(err)
	}
}

// workload registers a copy of stsctl at its own path as id and returns
// the path.
func (e *env) workload(name, id string) string {
	e.t.Helper()
	path, err := harness.CopyExecutable(bin.stsctl, e.spire.Dir(), name)
	if err != nil {
		e.t.Fatal(err)
	}
	e.register(harness.Entry{SPIFFEID: id, Selectors: []string{"unix:path:" + path}})
	return path
}

// sts is a running spiffe-sts process.
type sts struct {
	*harness.STS
	proc    *harness.Process
	url     string
	dataDir string
}

// startSTS starts spiffe-sts with the policy, waiting until it is ready.
// port 0 picks a free one; dataDir "" makes one.
func (e *env) startSTS(port int, dataDir, policy string) *sts {
	e.t.Helper()
	return e.startSTSWith(harness.STSOptions{Port: port, DataDir: dataDir, Policy: policy})
}

// startSTSWith starts spiffe-sts with opts, waiting until it is ready;
// Bin is this deployment's copy, and DataDir and Dir are made when empty.
func (e *env) startSTSWith(opts harness.STSOptions) *sts {
	e.t.Helper()
	if opts.DataDir == "" {
		opts.DataDir = e.t.TempDir()
	}
	if opts.Dir == "" {
		opts.Dir = e.t.TempDir()
	}
	opts.Bin = e.stsBin
	dataDir := opts.DataDir
	h, err := harness.StartSTS(e.t.Context(), e.spire, opts)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		_ = h.Stop()
		if e.t.Failed() {
			e.t.Logf("spiffe-sts log:\n%s", h.Output())
		}
	})
	return &sts{STS: h, proc: h.Process, url: h.URL, dataDir: dataDir}
}

// source returns this test process's X509Source from the agent.
func (e *env) source() *workloadapi.X509Source {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.t.Context(), 30*time.Second)
	defer cancel()
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(e.spire.WorkloadAPIAddr())))
	if err != nil {
		e.t.Fatalf("X509Source: %v", err)
	}
	e.t.Cleanup(func() { _ = src.Close() })
	return src
}

// jwtSVID fetches a JWT-SVID for this test process with the audience.
func (e *env) jwtSVID(audience string) *jwtsvid.SVID {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(e.t.Context(), 30*time.Second)
	defer cancel()
	c, err := workloadapi.New(ctx, workloadapi.WithAddr(e.spire.WorkloadAPIAddr()))
	if err != nil {
		e.t.Fatal(err)
	}
	defer c.Close()
	svid, err := c.FetchJWTSVID(ctx, jwtsvid.Params{Audience: audience})
	if err != nil {
		e.t.Fatalf("FetchJWTSVID: %v", err)
	}
	return svid
}

func (e *env) client(s *sts, src *workloadapi.X509Source) *exchangeclient.Client {
	e.t.Helper()
	c, err := exchangeclient.New(e.t.Context(), exchangeclient.WithIssuerURL(s.url),
		exchangeclient.WithX509Source(src), exchangeclient.WithServerID(spiffeid.RequireFromString(stsID)))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = c.Close() })
	return c
}

// httpClient is an mTLS client with this process's SVID that trusts the
// server by its SPIFFE ID; keepAlive false makes a new handshake per
// request.
func httpClient(src *workloadapi.X509Source, keepAlive bool) *http.Client {
	cfg := tlsconfig.MTLSClientConfig(src, src, tlsconfig.AuthorizeID(spiffeid.RequireFromString(stsID)))
	return &http.Client{
		Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: !keepAlive},
		Timeout:   10 * time.Second,
	}
}

// jwks fetches the server's JWKS over TLS.
func (s *sts) jwks(t *testing.T, c *http.Client) *accesstoken.StaticKeySet {
	t.Helper()
	resp, err := c.Get(s.url + "/jwks")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	keys, err := accesstoken.ParseStaticKeySet(raw)
	if err != nil {
		t.Fatalf("JWKS %s: %v", raw, err)
	}
	return keys
}

// postForm sends a token request with c and decodes the JSON answer.
func (s *sts) postForm(t *testing.T, c *http.Client, form string) (int, map[string]any, *tls.ConnectionState) {
	t.Helper()
	resp, body := s.post(t, c, form)
	return resp.StatusCode, body, resp.TLS
}

// post sends a token request with c and returns the response, its body
// closed, and the decoded JSON answer.
func (s *sts) post(t *testing.T, c *http.Client, form string) (*http.Response, map[string]any) {
	t.Helper()
	resp, err := c.Post(s.url+"/token", "application/x-www-form-urlencoded", strings.NewReader(form))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("response is not JSON: %v", err)
	}
	return resp, body
}

func leafOf(t *testing.T, src *workloadapi.X509Source) *x509.Certificate {
	t.Helper()
	svid, err := src.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	return svid.Certificates[0]
}

func fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return fmt.Sprintf("%x", sum[:8])
}
