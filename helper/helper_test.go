package helper_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/exchange"
	"github.com/spiffe-sts/spiffe-sts/helper"
	"github.com/spiffe-sts/spiffe-sts/helper/atomicdir"
	"github.com/spiffe-sts/spiffe-sts/internal/fakeclock"
	"github.com/spiffe-sts/spiffe-sts/internal/fakeworkloadapi"
	"github.com/spiffe-sts/spiffe-sts/internal/ststest"
	"github.com/spiffe-sts/spiffe-sts/internal/testrun"
	"github.com/spiffe-sts/spiffe-sts/issuer"
	stsid "github.com/spiffe-sts/spiffe-sts/spiffeid"
)

const (
	tokenName = "api.token"
	tokenTTL  = time.Minute
)

var files = helper.FileNames{Cert: "svid.pem", Key: "svid_key.pem", Bundle: "bundle.pem"}

// proxy forwards TCP connections to the STS while up; going down closes
// every connection and refuses new ones, as a stopped STS would.
type proxy struct {
	ln     net.Listener
	target string

	mu    sync.Mutex
	down  bool
	conns map[net.Conn]bool
}

func startProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]bool{}}
	t.Cleanup(func() { _ = ln.Close(); p.setDown(true) })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c)
		}
	}()
	return p
}

func (p *proxy) url() string { return "https://" + p.ln.Addr().String() }

func (p *proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		return false
	}
	p.conns[c] = true
	return true
}

func (p *proxy) serve(c net.Conn) {
	if !p.track(c) {
		_ = c.Close()
		return
	}
	up, err := net.Dial("tcp", p.target)
	if err != nil || !p.track(up) {
		_ = c.Close()
		return
	}
	go func() { _, _ = io.Copy(up, c); _ = up.Close() }()
	_, _ = io.Copy(c, up)
	_ = c.Close()
}

func (p *proxy) setDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for c := range p.conns {
			_ = c.Close()
		}
		clear(p.conns)
	}
}

// logLines collects the STS's JSON log lines.
type logLines struct{ testrun.Buffer }

// grants returns the grant_type of every token the STS issued.
func (l *logLines) grants(t *testing.T) []string {
	t.Helper()
	var out []string
	for _, line := range strings.Split(strings.TrimSpace(l.String()), "\n") {
		var rec map[string]any
		if line == "" || json.Unmarshal([]byte(line), &rec) != nil || rec["@message"] != "token issued" {
			continue
		}
		g, _ := rec["grant_type"].(string)
		out = append(out, strings.TrimPrefix(g, "urn:ietf:params:oauth:grant-type:"))
	}
	return out
}

// fixture is a helper running against an in-process STS (behind a proxy
// that can be taken down) and a fake Workload API, on a fake clock.
type fixture struct {
	t       *testing.T
	clock   *fakeclock.Clock
	sts     *ststest.STS
	proxy   *proxy
	wl      *fakeworkloadapi.WorkloadAPI
	dir     string
	h       *helper.Helper
	iss     *issuer.Issuer
	log     *logLines
	updates chan *helper.Set
	// The loop parks at each wait until released (see park).
	idle, resume chan struct{}
	parked       bool
}

type options struct {
	// overrideSTS changes the STS configuration.
	overrideSTS func(*exchange.Config)
	// overrideHelper changes the helper configuration.
	overrideHelper func(*helper.Config)
	// jwtSVIDs makes the token use the jwt_svid grant with JWT-SVIDs of
	// the test CA.
	jwtSVIDs bool
}

func start(t *testing.T, opts options) *fixture {
	t.Helper()
	f := &fixture{t: t, clock: fakeclock.New(time.Now()), log: &logLines{}, updates: make(chan *helper.Set, 16), idle: make(chan struct{}), resume: make(chan struct{})}
	f.sts = ststest.Start(t, func(cfg *exchange.Config) {
		f.iss = ststest.NewIssuer(t, cfg.IssuerURL, f.clock.Now)
		cfg.Minter, cfg.Keys, cfg.Clock = f.iss, f.iss.KeySet(), f.clock.Now
		cfg.Policy = policy(t)
		cfg.Logger = hclog.New(&hclog.LoggerOptions{Output: f.log, JSONFormat: true, Level: hclog.Debug})
		if opts.overrideSTS != nil {
			opts.overrideSTS(cfg)
		}
	})
	f.sts.Issuer = f.iss // for its Verifier
	f.proxy = startProxy(t, strings.TrimPrefix(f.sts.URL, "https://"))
	f.wl = fakeworkloadapi.Start(t, f.sts.CA, f.sts.CA.SVID(t, ststest.WorkloadID, time.Hour))
	ctx, cancel := context.WithCancel(context.Background())
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(f.wl.Addr)))
	if err != nil {
		t.Fatal(err)
	}
	f.dir = t.TempDir()
	w, err := atomicdir.New(f.dir, atomicdir.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := helper.Config{
		Source:    src,
		IssuerURL: f.proxy.url(),
		STSID:     spiffeid.RequireFromString(ststest.ServerID),
		Tokens:    []helper.TokenSpec{{Name: tokenName, Audience: []string{ststest.APIAudience}, Scope: []string{"read"}}},
		Files:     files,
		Writer:    w,
		OnUpdate:  func(s *helper.Set) { f.updates <- s },
		Clock:     f.clock,
	}
	if opts.jwtSVIDs {
		cfg.Tokens[0].Grant = helper.GrantJWTSVID
		cfg.JWTSource = fakeJWTSource{t: t, sts: f.sts}
	}
	if opts.overrideHelper != nil {
		opts.overrideHelper(&cfg)
	}
	if f.h, err = helper.New(cfg); err != nil {
		t.Fatal(err)
	}
	helper.SetIdleHook(f.h, func() {
		select {
		case f.idle <- struct{}{}:
		case <-ctx.Done():
			return
		}
		select {
		case <-f.resume:
		case <-ctx.Done():
		}
	})
	done := make(chan error, 1)
	go func() { done <- f.h.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		_ = src.Close()
	})
	return f
}

// policy allows the workload the API audience for tokenTTL.
func policy(t *testing.T) *stsid.Policy {
	t.Helper()
	p, err := stsid.NewPolicy([]stsid.Rule{{
		Pattern:       stsid.RequirePattern("spiffe://example.org/ns/prod/sa/*"),
		Audiences:     []string{ststest.APIAudience},
		Scopes:        []string{"read"},
		DefaultScopes: []string{"read"},
		MaxTTL:        tokenTTL,
	}})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// waitUpdate lets the loop run until it makes a set current.
func (f *fixture) waitUpdate() *helper.Set {
	f.t.Helper()
	f.release()
	timeout := time.After(20 * time.Second) // a bound, not a wait for time to pass
	for {
		select {
		case s := <-f.updates:
			return s
		case <-f.idle:
			f.resume <- struct{}{}
		case <-timeout:
			f.t.Fatal("no set written")
		}
	}
}

// park waits for the loop to reach its wait, timers set, and holds it
// there.
func (f *fixture) park() {
	f.t.Helper()
	if f.parked {
		return
	}
	select {
	case <-f.idle:
		f.parked = true
	case <-time.After(20 * time.Second):
		f.t.Fatal("the loop never waited")
	}
}

// release lets a parked loop go on.
func (f *fixture) release() {
	if f.parked {
		f.parked = false
		f.resume <- struct{}{}
	}
}

// advance moves the fake clock while the loop is parked, then lets it go.
func (f *fixture) advance(d time.Duration) {
	f.t.Helper()
	f.park()
	f.clock.Advance(d)
	f.release()
}

// settle waits for the loop to handle what woke it, and fails if it wrote
// a set.
func (f *fixture) settle() {
	f.t.Helper()
	f.park()
	select {
	case s := <-f.updates:
		f.t.Fatalf("unexpected set written for x5t#S256 %s", s.Thumbprint)
	default:
	}
}

// onDisk reads the current set from the output directory in one pass.
func (f *fixture) onDisk() (leaf *x509.Certificate, token string) {
	f.t.Helper()
	got, err := atomicdir.ReadSet(f.dir, files.Cert, files.Key, files.Bundle, tokenName)
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := tls.X509KeyPair(got[files.Cert], got[files.Key]); err != nil {
		f.t.Fatalf("key does not match the certificate: %v", err)
	}
	block, _ := pem.Decode(got[files.Cert])
	if block == nil {
		f.t.Fatal("no certificate PEM")
	}
	leaf, err = x509.ParseCertificate(block.Bytes)
	if err != nil {
		f.t.Fatal(err)
	}
	return leaf, string(got[tokenName])
}

// checkBound verifies the token as a resource server would, on a
// connection presenting leaf.
func (f *fixture) checkBound(token string, leaf *x509.Certificate) *accesstoken.Claims {
	f.t.Helper()
	claims, err := f.verifier().Verify(context.Background(), token, leaf)
	if err != nil {
		f.t.Fatalf("token does not verify bound to x5t#S256 %s: %v", accesstoken.Thumbprint(leaf), err)
	}
	return claims
}

func (f *fixture) verifier() *accesstoken.Verifier {
	return f.sts.VerifierWith(ststest.APIAudience, func(c *accesstoken.Config) { c.Now = f.clock.Now })
}

func equalStrings(a, b []string) bool {
	return strings.Join(a, ",") == strings.Join(b, ",")
}

func TestFirstSet(t *testing.T) {
	f := start(t, options{})
	s := f.waitUpdate()
	leaf, token := f.onDisk()
	if !bytes.Equal(leaf.Raw, s.Leaf().Raw) || s.Thumbprint != accesstoken.Thumbprint(leaf) {
		t.Fatal("the certificate on disk is not the set's")
	}
	claims := f.checkBound(token, leaf)
	if claims.Subject != ststest.WorkloadID || claims.Scope != "read" {
		t.Errorf("sub %q scope %q", claims.Subject, claims.Scope)
	}
	bundle, err := atomicdir.ReadSet(f.dir, files.Bundle)
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := s.Bundle.Marshal(); !bytes.Equal(bundle[files.Bundle], want) {
		t.Error("bundle on disk differs")
	}
	if err := f.h.Ready(); err != nil {
		t.Errorf("Ready: %v", err)
	}
	if got := f.log.grants(t); !equalStrings(got, []string{"client_credentials"}) {
		t.Errorf("grants %v", got)
	}
}

// TestSVIDOnlyWithCombinedFile: without tokens the helper writes the
// X509-SVID, its key, the bundle and the combined chain-and-key file
// (HAProxy's crt), never asks the STS for anything, and writes a new set
// on rotation.
func TestSVIDOnlyWithCombinedFile(t *testing.T) {
	const combined = "proxy.pem"
	f := start(t, options{overrideHelper: func(c *helper.Config) {
		c.Tokens, c.IssuerURL, c.STSID = nil, "", spiffeid.ID{}
		c.Files.Combined = combined
	}})
	check := func(s *helper.Set) {
		t.Helper()
		got, err := atomicdir.ReadSet(f.dir, files.Cert, files.Key, files.Bundle, combined)
		if err != nil {
			t.Fatal(err)
		}
		pair, err := tls.X509KeyPair(got[combined], got[combined])
		if err != nil {
			t.Fatalf("the combined file is not a certificate with its key: %v", err)
		}
		if !bytes.Equal(pair.Certificate[0], s.Leaf().Raw) || len(pair.Certificate) != len(s.SVID.Certificates) {
			t.Fatal("the combined file does not hold the set's chain, leaf first")
		}
		if !bytes.Equal(got[combined], append(append([]byte(nil), got[files.Cert]...), got[files.Key]...)) {
			t.Fatal("the combined file is not the chain followed by the key")
		}
	}
	first := f.waitUpdate()
	if len(first.Tokens) != 0 {
		t.Fatalf("%d tokens in an SVID-only set", len(first.Tokens))
	}
	check(first)
	if err := f.h.Ready(); err != nil {
		t.Errorf("Ready: %v", err)
	}
	f.wl.SetSVID(f.sts.CA.SVID(t, ststest.WorkloadID, time.Hour))
	next := f.waitUpdate()
	if bytes.Equal(next.Leaf().Raw, first.Leaf().Raw) {
		t.Fatal("no rotation")
	}
	check(next)
	if got := f.log.grants(t); len(got) != 0 {
		t.Errorf("the STS issued %v to an SVID-only helper", got)
	}
}

// TestRefreshBeforeExpiry: a token is replaced with the grant once two
// thirds of its life have passed, before it expires, with the same
// certificate.
func TestRefreshBeforeExpiry(t *testing.T) {
	f := start(t, options{})
	first := f.waitUpdate()
	tok, _ := first.Token(tokenName)
	f.advance(tokenTTL / 2)
	f.settle()
	if f.h.Current() != first {
		t.Fatal("set replaced at half the token's life")
	}
	f.advance(tokenTTL / 4)
	next := f.waitUpdate()
	if !bytes.Equal(next.Leaf().Raw, first.Leaf().Raw) {
		t.Fatal("refresh changed the certificate")
	}
	ntok, _ := next.Token(tokenName)
	if ntok.AccessToken == tok.AccessToken {
		t.Fatal("token not replaced")
	}
	if !f.clock.Now().Before(tok.Expiry) {
		t.Fatalf("refreshed at %v, after the old token expired at %v", f.clock.Now(), tok.Expiry)
	}
	leaf, token := f.onDisk()
	if token != ntok.AccessToken {
		t.Fatal("the refreshed token is not on disk")
	}
	f.checkBound(token, leaf)
	if got := f.log.grants(t); !equalStrings(got, []string{"client_credentials", "client_credentials"}) {
		t.Errorf("grants %v", got)
	}
}

// TestRotationRebindsBeforeSwap: on a new X509-SVID the token is
// re-bound (a token exchange of the current token) and the set that is
// written holds the new certificate with a token bound to it.
func TestRotationRebindsBeforeSwap(t *testing.T) {
	f := start(t, options{})
	first := f.waitUpdate()
	f.wl.SetSVID(f.sts.CA.SVID(t, ststest.WorkloadID, time.Hour))
	next := f.waitUpdate()
	if bytes.Equal(next.Leaf().Raw, first.Leaf().Raw) {
		t.Fatal("no rotation")
	}
	leaf, token := f.onDisk()
	if !bytes.Equal(leaf.Raw, next.Leaf().Raw) {
		t.Fatal("the new certificate is not on disk")
	}
	claims := f.checkBound(token, leaf)
	if claims.Scope != "read" {
		t.Errorf("re-bound scope %q", claims.Scope)
	}
	if _, err := f.verifier().Verify(context.Background(), token, first.Leaf()); err == nil {
		t.Fatal("the new token also verifies for the old certificate")
	}
	if got := f.log.grants(t); !equalStrings(got, []string{"client_credentials", "token-exchange"}) {
		t.Errorf("grants %v, want the grant and then a re-bind", got)
	}
}

// TestRotationFallsBackToGrant: when re-binding fails (here the STS
// cannot verify its own tokens), the grant is used for the new
// certificate.
func TestRotationFallsBackToGrant(t *testing.T) {
	f := start(t, options{overrideSTS: func(cfg *exchange.Config) {
		other, err := issuer.GenerateSigner(jwa.ES256())
		if err != nil {
			t.Fatal(err)
		}
		keys, err := issuer.StaticKeys(other)
		if err != nil {
			t.Fatal(err)
		}
		iss, err := issuer.New(issuer.Config{IssuerURL: cfg.IssuerURL, Keys: keys})
		if err != nil {
			t.Fatal(err)
		}
		cfg.Keys = iss.KeySet()
	}})
	f.waitUpdate()
	f.wl.SetSVID(f.sts.CA.SVID(t, ststest.WorkloadID, time.Hour))
	next := f.waitUpdate()
	leaf, token := f.onDisk()
	if !bytes.Equal(leaf.Raw, next.Leaf().Raw) {
		t.Fatal("the new certificate is not on disk")
	}
	tok, _ := next.Token(tokenName)
	if tok.AccessToken != token {
		t.Fatal("token on disk differs")
	}
	if got := f.log.grants(t); !equalStrings(got, []string{"client_credentials", "client_credentials"}) {
		t.Errorf("grants %v, want the grant twice", got)
	}
}

// TestSTSDown: with the STS unreachable past a refresh and across a
// rotation, the current set stays written and valid and no certificate
// is written without its token; once the STS is back the helper catches
// up.
func TestSTSDown(t *testing.T) {
	f := start(t, options{})
	first := f.waitUpdate()
	f.proxy.setDown(true)
	f.advance(tokenTTL * 2 / 3) // the refresh is due and fails
	f.settle()
	f.advance(time.Second) // the first retry fails
	f.settle()
	// A rotation while the STS is down: the new certificate has no token.
	f.wl.SetSVID(f.sts.CA.SVID(t, ststest.WorkloadID, time.Hour))
	f.release()
	f.settle()
	if f.h.Current() != first {
		t.Fatal("the set changed while the STS was down")
	}
	leaf, token := f.onDisk()
	if !bytes.Equal(leaf.Raw, first.Leaf().Raw) {
		t.Fatal("a certificate was written without its token")
	}
	if tok, _ := first.Token(tokenName); tok.AccessToken != token {
		t.Fatal("the token on disk changed")
	}
	if err := f.h.Ready(); err != nil {
		t.Fatalf("Ready while the set is valid: %v", err)
	}

	f.proxy.setDown(false)
	f.advance(5 * time.Second) // past the backoff
	next := f.waitUpdate()
	if bytes.Equal(next.Leaf().Raw, first.Leaf().Raw) {
		t.Fatal("recovered without the new certificate")
	}
	tok, _ := first.Token(tokenName)
	if !f.clock.Now().Before(tok.Expiry) {
		t.Fatalf("recovered at %v, after the token expired at %v", f.clock.Now(), tok.Expiry)
	}
	leaf, token = f.onDisk()
	f.checkBound(token, leaf)
	if err := f.h.Ready(); err != nil {
		t.Fatalf("Ready: %v", err)
	}
}

// TestSTSDownUntilExpiry: the helper retries sooner as the set nears
// expiry, and Ready fails once the token has expired.
func TestSTSDownUntilExpiry(t *testing.T) {
	f := start(t, options{overrideHelper: func(cfg *helper.Config) {
		cfg.Backoff = func(int) time.Duration { return time.Hour }
	}})
	f.waitUpdate()
	f.proxy.setDown(true)
	f.advance(tokenTTL * 2 / 3)
	f.settle()
	f.advance(tokenTTL / 3)
	f.settle()
	if err := f.h.Ready(); err == nil {
		t.Fatal("Ready with an expired token")
	}
	f.proxy.setDown(false)
	// An hour of backoff is cut short near expiry: a retry is due within
	// a second.
	f.advance(time.Second)
	f.waitUpdate()
	if err := f.h.Ready(); err != nil {
		t.Fatalf("Ready: %v", err)
	}
}

// fakeJWTSource issues JWT-SVIDs for the workload, addressed to the STS.
type fakeJWTSource struct {
	t   *testing.T
	sts *ststest.STS
}

func (s fakeJWTSource) FetchJWTSVID(_ context.Context, p jwtsvid.Params) (*jwtsvid.SVID, error) {
	raw := s.sts.JWTSVID(s.t, ststest.WorkloadID)
	return jwtsvid.ParseInsecure(raw, []string{s.sts.URL})
}

func TestJWTSVIDGrant(t *testing.T) {
	f := start(t, options{jwtSVIDs: true})
	f.waitUpdate()
	leaf, token := f.onDisk()
	f.checkBound(token, leaf)
	if got := f.log.grants(t); !equalStrings(got, []string{"token-exchange"}) {
		t.Errorf("grants %v", got)
	}
}

func TestHandler(t *testing.T) {
	f := start(t, options{})
	srv := httptest.NewServer(f.h.Handler())
	defer srv.Close()
	get := func(path string) (int, map[string]any) {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if cc := resp.Header.Get("Cache-Control"); cc != "no-store" {
			t.Errorf("Cache-Control %q", cc)
		}
		var body map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, body
	}
	s := f.waitUpdate()
	code, body := get(helper.PathTokens)
	if code != http.StatusOK || body["x5t#S256"] != s.Thumbprint || body["spiffe_id"] != ststest.WorkloadID {
		t.Fatalf("%d %v", code, body)
	}
	code, body = get(helper.PathTokens + "/" + tokenName)
	tok, _ := s.Token(tokenName)
	if code != http.StatusOK || body["access_token"] != tok.AccessToken || body["x5t#S256"] != s.Thumbprint || body["token_type"] != "Bearer" {
		t.Fatalf("%d %v", code, body)
	}
	if code, body = get(helper.PathTokens + "/nope"); code != http.StatusNotFound || body["error"] != "not_found" {
		t.Fatalf("%d %v", code, body)
	}
}

func TestHandlerBeforeFirstSet(t *testing.T) {
	h, err := helper.New(validConfig())
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	h.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, helper.PathTokens, nil))
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), `"not_ready"`) {
		t.Fatalf("%d %s", rec.Code, rec.Body)
	}
}

type nopWriter struct{}

func (nopWriter) Write(map[string][]byte) error { return nil }

type nopSource struct{ helper.X509Source }

func validConfig() helper.Config {
	return helper.Config{
		Source:    nopSource{},
		IssuerURL: "https://sts.example.org",
		Tokens:    []helper.TokenSpec{{Name: tokenName, Audience: []string{ststest.APIAudience}}},
		Files:     files,
		Writer:    nopWriter{},
	}
}

func TestNewConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name           string
		overrideConfig func(*helper.Config)
		expectErr      string
	}{
		{name: "valid"},
		{name: "no source", overrideConfig: func(c *helper.Config) { c.Source = nil }, expectErr: "helper: Source is required"},
		{name: "no writer", overrideConfig: func(c *helper.Config) { c.Writer = nil }, expectErr: "helper: Writer is required"},
		{name: "no tokens: SVID only", overrideConfig: func(c *helper.Config) { c.Tokens = nil }},
		{name: "no tokens, no issuer", overrideConfig: func(c *helper.Config) { c.Tokens, c.IssuerURL = nil, "" }},
		{name: "tokens without issuer", overrideConfig: func(c *helper.Config) { c.IssuerURL = "" }, expectErr: `helper: issuer URL "" is required`},
		{name: "combined file", overrideConfig: func(c *helper.Config) { c.Files.Combined = "proxy.pem" }},
		{name: "combined file used twice", overrideConfig: func(c *helper.Config) { c.Files.Combined = files.Key }, expectErr: `helper: file name "svid_key.pem" is used twice`},
		{name: "bad combined name", overrideConfig: func(c *helper.Config) { c.Files.Combined = ".x" }, expectErr: `helper: atomicdir: file name ".x" starts with a dot`},
		{name: "issuer with path", overrideConfig: func(c *helper.Config) { c.IssuerURL = "https://sts.example.org/x" }, expectErr: `helper: issuer URL "https://sts.example.org/x" must not have a path`},
		{name: "file used twice", overrideConfig: func(c *helper.Config) { c.Tokens[0].Name = files.Cert }, expectErr: `helper: file name "svid.pem" is used twice`},
		{name: "bad token name", overrideConfig: func(c *helper.Config) { c.Tokens[0].Name = "../x" }, expectErr: `helper: token: atomicdir: file name "../x" starts with a dot`},
		{name: "no audience", overrideConfig: func(c *helper.Config) { c.Tokens[0].Audience = nil }, expectErr: `helper: token "api.token" has no audience`},
		{name: "jwt_svid without source", overrideConfig: func(c *helper.Config) { c.Tokens[0].Grant = helper.GrantJWTSVID }, expectErr: `helper: token "api.token" uses the jwt_svid grant and there is no JWTSource`},
		{name: "unknown grant", overrideConfig: func(c *helper.Config) { c.Tokens[0].Grant = "password" }, expectErr: `helper: token "api.token" has unknown grant "password"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := validConfig()
			if tc.overrideConfig != nil {
				tc.overrideConfig(&cfg)
			}
			_, err := helper.New(cfg)
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
