package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jws"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/exchange/extissuer"
	"github.com/spiffe-sts/spiffe-sts/internal/testrun"
)

const frontendID = "spiffe://example.org/ns/shop/sa/frontend"

// startServe runs serve in the background until the test ends and returns
// the issuer URL, the client trusting its certificate, and the function
// that stops it and returns serve's error.
func startServe(t *testing.T, alg jwa.SignatureAlgorithm) (issuer string, client *http.Client, stop func() error) {
	t.Helper()
	dir := t.TempDir()
	out := new(testrun.Buffer)
	stop = testrun.Start(t, "serve", 10*time.Second, func(ctx context.Context) error {
		return serve(ctx, options{Addr: "127.0.0.1:0", CertOut: dir, Alg: alg}, out)
	})

	const ready = "oidcissuer: serving "
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(out.String(), ready); {
		if time.Now().After(deadline) {
			t.Fatalf("no ready line; output %q", out.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	line := out.String()
	if !strings.HasSuffix(line, "\n") || strings.Count(line, "\n") != 1 {
		t.Fatalf("output %q, want one line", line)
	}
	issuer = strings.TrimSuffix(strings.TrimPrefix(line, ready), "\n")
	if !strings.HasPrefix(issuer, "https://127.0.0.1:") {
		t.Fatalf("issuer %q", issuer)
	}
	pemBytes, err := os.ReadFile(filepath.Join(dir, caFileName))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pemBytes) {
		t.Fatal("ca.pem has no certificate")
	}
	client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	t.Cleanup(client.CloseIdleConnections)
	return issuer, client, stop
}

func getJSON(t *testing.T, c *http.Client, url string, v any) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

// postToken posts form to /token and returns the status and decoded body.
func postToken(t *testing.T, c *http.Client, issuer string, form url.Values) (int, map[string]any) {
	t.Helper()
	resp, err := c.PostForm(issuer+pathToken, form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body
}

// TestServe runs the issuer as the command does and verifies its tokens
// as spiffe-sts does, through the discovered JWKS URL.
func TestServe(t *testing.T) {
	for _, alg := range []jwa.SignatureAlgorithm{jwa.ES256(), jwa.RS256()} {
		t.Run(alg.String(), func(t *testing.T) {
			issuer, client, stop := startServe(t, alg)

			var md struct {
				Issuer  string   `json:"issuer"`
				JWKSURI string   `json:"jwks_uri"`
				Token   string   `json:"token_endpoint"`
				Algs    []string `json:"id_token_signing_alg_values_supported"`
			}
			getJSON(t, client, issuer+pathMetadata, &md)
			if md.Issuer != issuer || md.JWKSURI != issuer+"/jwks" || md.Token != issuer+"/token" || !reflect.DeepEqual(md.Algs, []string{alg.String()}) {
				t.Fatalf("metadata %+v", md)
			}

			verifier, err := extissuer.New(context.Background(), extissuer.Config{
				Name: "corp", Issuer: md.Issuer, JWKSURL: md.JWKSURI, HTTPClient: client, Audience: "spiffe-sts",
			})
			if err != nil {
				t.Fatal(err)
			}
			status, body := postToken(t, client, issuer, url.Values{
				"sub":     {"alice@example.com"},
				"aud":     {"spiffe-sts", "https://shop.example.com"},
				"scope":   {"orders:read profile"},
				"ttl":     {"2m"},
				"may_act": {frontendID},
			})
			if status != http.StatusOK || body["token_type"] != "Bearer" || body["expires_in"] != float64(120) {
				t.Fatalf("POST /token: %d %v", status, body)
			}
			raw, _ := body["access_token"].(string)
			claims, err := verifier.Verify(context.Background(), raw)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			expected := &accesstoken.Claims{
				Issuer:    issuer,
				Subject:   "alice@example.com",
				Audience:  accesstoken.Audience{"spiffe-sts", "https://shop.example.com"},
				Expiry:    claims.IssuedAt + 120,
				IssuedAt:  claims.IssuedAt,
				NotBefore: claims.IssuedAt,
				JWTID:     claims.JWTID,
				Scope:     "orders:read profile",
				MayAct:    &accesstoken.Actor{Subject: frontendID},
			}
			if !reflect.DeepEqual(claims, expected) || claims.JWTID == "" || time.Since(time.Unix(claims.IssuedAt, 0)).Abs() > time.Minute {
				t.Fatalf("claims:\n%+v\nwant:\n%+v", claims, expected)
			}
			msg, err := jws.Parse([]byte(raw))
			if err != nil {
				t.Fatal(err)
			}
			h := msg.Signatures()[0].ProtectedHeaders()
			typ, _ := h.Type()
			kid, _ := h.KeyID()
			hdrAlg, _ := h.Algorithm()
			if typ != "JWT" || kid == "" || hdrAlg != alg {
				t.Fatalf("header typ %q kid %q alg %q", typ, kid, hdrAlg)
			}

			if err := stop(); err != nil {
				t.Fatalf("serve: %v", err)
			}
			if _, err := client.Get(issuer + pathJWKS); err == nil {
				t.Fatal("the server still answers after stop")
			}
		})
	}
}

func TestToken(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	s, err := newServer("https://127.0.0.1:8443", jwa.ES256(), func() time.Time { return now })
	if err != nil {
		t.Fatal(err)
	}
	baseline := func() url.Values {
		return url.Values{"sub": {"alice"}, "aud": {"spiffe-sts"}}
	}
	for _, tc := range []struct {
		name         string
		overrideForm func(url.Values)
		remoteAddr   string
		expectStatus int
		expectBody   map[string]any // error bodies
		expectClaims map[string]any // claims of the issued token
	}{
		{
			name: "baseline",
			expectClaims: map[string]any{
				"iss": "https://127.0.0.1:8443", "sub": "alice", "aud": "spiffe-sts",
				"iat": float64(now.Unix()), "nbf": float64(now.Unix()), "exp": float64(now.Unix() + 300),
			},
		},
		{
			name: "every field",
			overrideForm: func(f url.Values) {
				f["aud"] = []string{"spiffe-sts", "other"}
				f.Set("scope", " a  b ")
				f.Set("ttl", "1h")
				f.Set("may_act", frontendID)
			},
			expectClaims: map[string]any{
				"iss": "https://127.0.0.1:8443", "sub": "alice", "aud": []any{"spiffe-sts", "other"},
				"iat": float64(now.Unix()), "nbf": float64(now.Unix()), "exp": float64(now.Unix() + 3600),
				"scope": "a b", "may_act": map[string]any{"sub": frontendID},
			},
		},
		{
			name:         "IPv6 loopback client",
			remoteAddr:   "[::1]:4242",
			expectClaims: map[string]any{"sub": "alice"},
		},
		{
			name:         "no sub",
			overrideForm: func(f url.Values) { f.Del("sub") },
			expectStatus: http.StatusBadRequest,
			expectBody:   map[string]any{"error": "invalid_request", "error_description": "sub is required"},
		},
		{
			name:         "no aud",
			overrideForm: func(f url.Values) { f.Del("aud") },
			expectStatus: http.StatusBadRequest,
			expectBody:   map[string]any{"error": "invalid_request", "error_description": "aud is required"},
		},
		{
			name:         "bad ttl",
			overrideForm: func(f url.Values) { f.Set("ttl", "25h") },
			expectStatus: http.StatusBadRequest,
			expectBody:   map[string]any{"error": "invalid_request", "error_description": `ttl "25h": want a positive duration of at most 24h0m0s`},
		},
		{
			name:         "may_act not a SPIFFE ID",
			overrideForm: func(f url.Values) { f.Set("may_act", "frontend") },
			expectStatus: http.StatusBadRequest,
			expectBody:   map[string]any{"error": "invalid_request", "error_description": `may_act "frontend" is not a SPIFFE ID: scheme is missing or invalid`},
		},
		{
			name:         "remote client",
			remoteAddr:   "192.0.2.1:4242",
			expectStatus: http.StatusForbidden,
			expectBody:   map[string]any{"error": "access_denied", "error_description": "tokens are issued to loopback clients only"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			form := baseline()
			if tc.overrideForm != nil {
				tc.overrideForm(form)
			}
			req := httptest.NewRequest(http.MethodPost, pathToken, strings.NewReader(form.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.RemoteAddr = "127.0.0.1:4242"
			if tc.remoteAddr != "" {
				req.RemoteAddr = tc.remoteAddr
			}
			rec := httptest.NewRecorder()
			s.ServeHTTP(rec, req)
			var body map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
				t.Fatal(err)
			}
			if tc.expectStatus == 0 {
				tc.expectStatus = http.StatusOK
			}
			if rec.Code != tc.expectStatus {
				t.Fatalf("status %d, want %d: %v", rec.Code, tc.expectStatus, body)
			}
			if tc.expectBody != nil {
				if !reflect.DeepEqual(body, tc.expectBody) {
					t.Fatalf("body %v, want %v", body, tc.expectBody)
				}
				return
			}
			raw, _ := body["access_token"].(string)
			msg, err := jws.Parse([]byte(raw))
			if err != nil {
				t.Fatal(err)
			}
			var claims map[string]any
			if err := json.Unmarshal(msg.Payload(), &claims); err != nil {
				t.Fatal(err)
			}
			if jti, _ := claims["jti"].(string); len(jti) != 22 {
				t.Errorf("jti %q", jti)
			}
			for k, want := range tc.expectClaims {
				if !reflect.DeepEqual(claims[k], want) {
					t.Errorf("claim %s = %#v, want %#v", k, claims[k], want)
				}
			}
		})
	}
}

func TestFlags(t *testing.T) {
	for _, tc := range []struct {
		name         string
		args         []string
		expectCode   int
		expectStderr string // prefix
	}{
		{name: "no -cert-out", expectCode: 2, expectStderr: "oidcissuer: -cert-out is required\nUsage of oidcissuer:"},
		{name: "bad -alg", args: []string{"-cert-out", t.TempDir(), "-alg", "HS256"}, expectCode: 2, expectStderr: `oidcissuer: unsupported -alg "HS256": want ES256 or RS256`},
		{name: "extra argument", args: []string{"-cert-out", t.TempDir(), "x"}, expectCode: 2, expectStderr: `oidcissuer: unexpected argument "x"`},
		{name: "non-loopback address", args: []string{"-cert-out", t.TempDir(), "-addr", "0.0.0.0:0"}, expectCode: 1, expectStderr: `oidcissuer: -addr "0.0.0.0:0": the host must be a loopback IP address` + "\n"},
		{name: "host name", args: []string{"-cert-out", t.TempDir(), "-addr", "localhost:0"}, expectCode: 1, expectStderr: `oidcissuer: -addr "localhost:0": the host must be a loopback IP address` + "\n"},
		{name: "help", args: []string{"-h"}, expectStderr: "Usage of oidcissuer:"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := realMain(tc.args, &stdout, &stderr); code != tc.expectCode {
				t.Fatalf("exit code %d, want %d; stderr %q", code, tc.expectCode, stderr.String())
			}
			if !strings.HasPrefix(stderr.String(), tc.expectStderr) {
				t.Fatalf("stderr %q, want prefix %q", stderr.String(), tc.expectStderr)
			}
			if stdout.Len() != 0 {
				t.Fatalf("stdout %q", stdout.String())
			}
		})
	}
}
