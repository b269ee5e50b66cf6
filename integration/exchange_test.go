//go:build integration

package integration

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/exchange/exchangeclient"
	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
	"github.com/spiffe-sts/spiffe-sts/internal/testca"
)

// TestExchange covers the token endpoint on real SPIRE: the JWT-SVID
// exchange and client_credentials with the binding and the JWKS, policy,
// audience and scope decisions, and the refusal of forged, wrong-audience
// and untrusted credentials.
func TestExchange(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	s := e.startSTS(0, "", policyRule)
	src := e.source()
	c := e.client(s, src)
	ctx := t.Context()
	keys := s.jwks(t, httpClient(src, true))
	verifier := accesstoken.NewVerifier(s.url, keys, &accesstoken.Config{Audiences: []string{apiAud}})

	t.Run("JWT-SVID exchange yields a token bound to the workload's certificate", func(t *testing.T) {
		svid := e.jwtSVID(s.url)
		tok, err := c.Exchange(ctx, exchangeclient.Request{SubjectToken: svid.Marshal(), Audience: []string{apiAud}})
		if err != nil {
			t.Fatal(err)
		}
		claims, err := verifier.Verify(ctx, tok.AccessToken, leafOf(t, src))
		if err != nil {
			t.Fatalf("token does not verify against the JWKS and this workload's certificate: %v", err)
		}
		if claims.Subject != clientID || claims.ClientID != clientID || claims.Scope != "read" {
			t.Fatalf("claims %+v", claims)
		}
		if claims.Confirmation.X5TS256 != accesstoken.Thumbprint(leafOf(t, src)) {
			t.Fatal("cnf does not match the workload's certificate")
		}
		if time.Until(tok.Expiry) > 2*time.Minute+time.Second {
			t.Fatalf("expiry %v exceeds the policy's max_ttl", tok.Expiry)
		}
	})
	t.Run("client_credentials", func(t *testing.T) {
		tok, err := c.Exchange(ctx, exchangeclient.Request{Audience: []string{apiAud}, Scope: []string{"write"}})
		if err != nil {
			t.Fatal(err)
		}
		claims, err := verifier.Verify(ctx, tok.AccessToken, leafOf(t, src))
		if err != nil || claims.Scope != "write" {
			t.Fatalf("claims %+v, err %v", claims, err)
		}
	})
	t.Run("scope ceiling", func(t *testing.T) {
		tok, err := c.Exchange(ctx, exchangeclient.Request{Audience: []string{apiAud}, Scope: []string{"read", "admin"}})
		if err != nil {
			t.Fatal(err)
		}
		if strings.Join(tok.Scope, " ") != "read" {
			t.Fatalf("granted %q, want read", tok.Scope)
		}
		_, err = c.Exchange(ctx, exchangeclient.Request{Audience: []string{apiAud}, Scope: []string{"admin"}})
		if !errors.Is(err, protocol.ErrInvalidScope) {
			t.Fatalf("err = %v, want invalid_scope", err)
		}
	})
	t.Run("audience not allowed", func(t *testing.T) {
		_, err := c.Exchange(ctx, exchangeclient.Request{SubjectToken: e.jwtSVID(s.url).Marshal(), Audience: []string{otherAud}})
		if !errors.Is(err, protocol.ErrInvalidTarget) {
			t.Fatalf("err = %v, want invalid_target", err)
		}
	})
	t.Run("JWT-SVID for another audience", func(t *testing.T) {
		_, err := c.Exchange(ctx, exchangeclient.Request{SubjectToken: e.jwtSVID("spiffe://example.org/not-the-sts").Marshal(), Audience: []string{apiAud}})
		if !errors.Is(err, protocol.ErrInvalidGrant) {
			t.Fatalf("err = %v, want invalid_grant", err)
		}
	})
	t.Run("forged JWT-SVID", func(t *testing.T) {
		// Signed by a key of our own under the kid of a real SPIRE JWT
		// authority: the lookup succeeds, the signature does not.
		real := e.jwtSVID(s.url).Marshal()
		kid := headerKeyID(t, real)
		forged := testca.SignJWT(t, testca.NewKey(t), kid, map[string]any{
			"sub": clientID, "aud": []string{s.url}, "exp": time.Now().Add(time.Minute).Unix(),
		})
		_, err := c.Exchange(ctx, exchangeclient.Request{SubjectToken: forged, Audience: []string{apiAud}})
		if !errors.Is(err, protocol.ErrInvalidGrant) {
			t.Fatalf("err = %v, want invalid_grant", err)
		}
	})
	t.Run("caller from an untrusted trust domain", func(t *testing.T) {
		evil := testca.New(t, "evil.example")
		svid := evil.SVID(t, "spiffe://evil.example/ns/prod/sa/client", time.Hour)
		// The server is verified with the real bundle; the client presents
		// the foreign SVID.
		cfg := tlsconfig.TLSClientConfig(src, tlsconfig.AuthorizeID(spiffeid.RequireFromString(stsID)))
		cfg.GetClientCertificate = tlsconfig.GetClientCertificate(svid)
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
		status, body, _ := s.postForm(t, hc, url.Values{"grant_type": {"client_credentials"}, "audience": {apiAud}}.Encode())
		if status != 401 || body["error"] != "invalid_client" {
			t.Fatalf("got %d %v, want 401 invalid_client", status, body)
		}
	})
	t.Run("stsctl as a workload: exchange and verify", func(t *testing.T) {
		web := e.workload("web", "spiffe://example.org/ns/prod/sa/web")
		out, code := runWorkload(t, web, e.spire.WorkloadAPIAddr(), "exchange", "-sts", s.url, "-audience", apiAud, "-output", "claims", "-verify")
		if code != 0 || !strings.Contains(out, `"sub": "spiffe://example.org/ns/prod/sa/web"`) ||
			!strings.Contains(out, "signature: verified") || !strings.Contains(out, "matches this workload's certificate") {
			t.Fatalf("exit %d, output:\n%s", code, out)
		}
	})
	t.Run("policy deny, through stsctl as another workload", func(t *testing.T) {
		denied := e.workload("denied", deniedID)
		out, code := runWorkload(t, denied, e.spire.WorkloadAPIAddr(), "exchange", "-sts", s.url, "-audience", apiAud)
		if code != 1 || !strings.Contains(out, "unauthorized_client") {
			t.Fatalf("exit %d, output:\n%s", code, out)
		}
	})
}

// TestExpiredJWTSVID presents a real JWT-SVID after it has expired.
func TestExpiredJWTSVID(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{clientJWTTTL: 5 * time.Second})
	s := e.startSTS(0, "", policyRule)
	c := e.client(s, e.source())
	svid := e.jwtSVID(s.url)
	if wait := time.Until(svid.Expiry) + time.Second; wait > 0 {
		time.Sleep(wait)
	}
	_, err := c.Exchange(t.Context(), exchangeclient.Request{SubjectToken: svid.Marshal(), Audience: []string{apiAud}})
	var oauthErr protocol.Error
	if !errors.As(err, &oauthErr) || oauthErr.Code != "invalid_grant" || oauthErr.Description != "the subject token has expired" {
		t.Fatalf("err = %v, want invalid_grant: the subject token has expired", err)
	}
}

// TestRestartKeepsSigningKeys restarts spiffe-sts on the same data
// directory: a token issued before still verifies against the JWKS after.
func TestRestartKeepsSigningKeys(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	s := e.startSTS(0, "", policyRule)
	src := e.source()
	tok, err := e.client(s, src).Exchange(t.Context(), exchangeclient.Request{Audience: []string{apiAud}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.proc.Exited():
	case <-time.After(15 * time.Second):
		t.Fatal("spiffe-sts did not stop on SIGTERM")
	}
	if err := s.proc.Err(); err != nil {
		t.Fatalf("spiffe-sts exited with %v on SIGTERM", err)
	}
	again := e.startSTS(s.Port, s.dataDir, policyRule)
	keys := again.jwks(t, httpClient(src, false))
	v := accesstoken.NewVerifier(again.url, keys, &accesstoken.Config{Audiences: []string{apiAud}})
	if _, err := v.Verify(t.Context(), tok.AccessToken, leafOf(t, src)); err != nil {
		t.Fatalf("a token issued before the restart does not verify after it: %v", err)
	}
}

// TestServerSVIDRotation keeps exchanging over fresh connections while the
// server's own X509-SVID rotates every few seconds: every request
// succeeds, the process never restarts, and new handshakes present the new
// certificates.
func TestServerSVIDRotation(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{stsSVIDTTL: 20 * time.Second})
	s := e.startSTS(0, "", policyRule)
	src := e.source()
	hc := httpClient(src, false)
	form := url.Values{"grant_type": {"client_credentials"}, "audience": {apiAud}}.Encode()
	seen := map[string]bool{}
	var order []string
	requests := 0
	deadline := time.Now().Add(40 * time.Second)
	for len(order) < 3 && time.Now().Before(deadline) {
		status, body, state := s.postForm(t, hc, form)
		requests++
		if status != 200 {
			t.Fatalf("request %d failed during rotation: %d %v", requests, status, body)
		}
		if fp := fingerprint(state.PeerCertificates[0]); !seen[fp] {
			seen[fp] = true
			order = append(order, fp)
		}
		select {
		case <-s.proc.Exited():
			t.Fatalf("spiffe-sts exited during rotation:\n%s", s.proc.Output())
		case <-time.After(100 * time.Millisecond):
		}
	}
	t.Logf("server certificates seen: %v over %d requests", order, requests)
	if len(order) < 3 {
		t.Fatalf("saw %d server certificates in 40s, want at least 3 (two rotations)", len(order))
	}
	if !strings.Contains(s.proc.Output(), "X509-SVID rotated") {
		t.Error("spiffe-sts did not log its SVID rotation")
	}
}

// runWorkload runs a registered copy of stsctl with the Workload API
// address and returns its combined output and exit code.
func runWorkload(t *testing.T, path, workloadAPI string, args ...string) (string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = append(cmd.Environ(), "SPIFFE_ENDPOINT_SOCKET="+workloadAPI)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &exit):
		return string(out), exit.ExitCode()
	default:
		t.Fatalf("run %s: %v", path, err)
		return "", -1
	}
}

// headerKeyID returns the kid of a JWS without verifying it.
func headerKeyID(t *testing.T, raw string) string {
	t.Helper()
	msg, err := jws.Parse([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	kid, _ := msg.Signatures()[0].ProtectedHeaders().KeyID()
	return kid
}
