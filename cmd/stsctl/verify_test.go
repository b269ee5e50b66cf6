package main

import (
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/internal/ststest"
)

func TestVerify(t *testing.T) {
	s := ststest.Start(t, nil)
	leaf := s.WorkloadSVID(t, ststest.WorkloadID).Certificates[0]
	other := s.WorkloadSVID(t, ststest.OtherID).Certificates[0]
	token := mint(t, s, nil)

	jwks, err := s.Issuer.KeySet().MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	jwksFile := writeFile(t, "jwks.json", jwks)
	certFile := writeFile(t, "svid.pem", certPEM(leaf.Raw))
	otherFile := writeFile(t, "other.pem", certPEM(other.Raw))
	otherSTS := ststest.Start(t, nil)
	otherJWKS, err := otherSTS.Issuer.KeySet().MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	otherJWKSFile := writeFile(t, "other-jwks.json", otherJWKS)

	// An https JWKS endpoint with a certificate for 127.0.0.1.
	jwksServer := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(jwks)
	}))
	t.Cleanup(jwksServer.Close)
	caFile := writeFile(t, "ca.pem", certPEM(jwksServer.Certificate().Raw))
	kid := mustDecode(t, token).keyID

	type params struct {
		jwks, cert, issuer, audience string
		extra                        []string
		stdin                        string
		token                        []string
	}
	tests := []struct {
		name             string
		overrideParams   func(*params)
		overrideExpected func(*expected)
	}{
		{
			name: "valid",
		},
		{
			name:           "token on stdin",
			overrideParams: func(p *params) { p.token, p.stdin = nil, token+"\n" },
		},
		{
			name:           "flags after the token",
			overrideParams: func(p *params) { p.extra = []string{"-leeway", "5s"} },
		},
		{
			name:           "JWKS over https with -ca",
			overrideParams: func(p *params) { p.jwks, p.extra = jwksServer.URL+"/jwks", []string{"-ca", caFile} },
			overrideExpected: func(e *expected) {
				e.stdoutHas = []string{"signature: verified with key " + kid + " from " + jwksServer.URL + "/jwks\n"}
			},
		},
		{
			name:           "different certificate",
			overrideParams: func(p *params) { p.cert = otherFile },
			overrideExpected: func(e *expected) {
				e.code, e.stdoutHas = exitInvalid, nil
				e.stderrHas = []string{"stsctl verify: invalid token: binding: cnf x5t#S256 " + accesstoken.Thumbprint(leaf) +
					" does not match the certificate in " + otherFile + " (x5t#S256 " + accesstoken.Thumbprint(other) + ")\n"}
			},
		},
		{
			name:           "wrong audience",
			overrideParams: func(p *params) { p.audience = ststest.OrdersResource },
			overrideExpected: func(e *expected) {
				e.code, e.stdoutHas = exitInvalid, nil
				e.stderrHas = []string{"stsctl verify: invalid token: accesstoken: audience not accepted"}
			},
		},
		{
			name:           "wrong issuer",
			overrideParams: func(p *params) { p.issuer = "https://sts.example.org" },
			overrideExpected: func(e *expected) {
				e.code, e.stdoutHas = exitInvalid, nil
				e.stderrHas = []string{"stsctl verify: invalid token: accesstoken: wrong issuer"}
			},
		},
		{
			name:           "another issuer's keys",
			overrideParams: func(p *params) { p.jwks = otherJWKSFile },
			overrideExpected: func(e *expected) {
				e.code, e.stdoutHas = exitInvalid, nil
				e.stderrHas = []string{"stsctl verify: invalid token: accesstoken: signature does not verify"}
			},
		},
		{
			name:           "malformed token",
			overrideParams: func(p *params) { p.token = []string{"garbage"} },
			overrideExpected: func(e *expected) {
				e.code, e.stdoutHas = exitInvalid, nil
				e.stderrHas = []string{"stsctl verify: invalid token: accesstoken: malformed token"}
			},
		},
		{
			name:           "missing -jwks",
			overrideParams: func(p *params) { p.jwks = "" },
			overrideExpected: func(e *expected) {
				e.code, e.stdoutHas, e.stderrHas = exitUsage, nil, []string{"stsctl verify: -jwks is required\n"}
			},
		},
		{
			name:           "missing -audience",
			overrideParams: func(p *params) { p.audience = "" },
			overrideExpected: func(e *expected) {
				e.code, e.stdoutHas, e.stderrHas = exitUsage, nil, []string{"stsctl verify: -audience is required\n"}
			},
		},
		{
			name:           "http JWKS URL",
			overrideParams: func(p *params) { p.jwks = "http://127.0.0.1/jwks" },
			overrideExpected: func(e *expected) {
				e.code, e.stdoutHas, e.stderrHas = exitUsage, nil, []string{"stsctl verify: -jwks URL must be https\n"}
			},
		},
		{
			name:           "negative leeway",
			overrideParams: func(p *params) { p.extra = []string{"-leeway", "-1s"} },
			overrideExpected: func(e *expected) {
				e.code, e.stdoutHas, e.stderrHas = exitUsage, nil, []string{"-leeway must not be negative"}
			},
		},
		{
			name:           "missing certificate file",
			overrideParams: func(p *params) { p.cert = filepath.Join(t.TempDir(), "missing.pem") },
			overrideExpected: func(e *expected) {
				e.code, e.stdoutHas, e.stderrHas = exitEnv, nil, []string{"missing.pem: no such file or directory"}
			},
		},
		{
			name:           "certificate file without a certificate",
			overrideParams: func(p *params) { p.cert = jwksFile },
			overrideExpected: func(e *expected) {
				e.code, e.stdoutHas, e.stderrHas = exitEnv, nil, []string{"jwks.json: no CERTIFICATE block"}
			},
		},
		{
			name:           "https JWKS not trusted without -ca",
			overrideParams: func(p *params) { p.jwks = jwksServer.URL + "/jwks" },
			overrideExpected: func(e *expected) {
				e.code, e.stdoutHas, e.stderrHas = exitEnv, nil, []string{"fetching the JWKS: ", "certificate signed by unknown authority"}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := params{jwks: jwksFile, cert: certFile, issuer: s.URL, audience: ststest.APIAudience, token: []string{token}}
			e := expected{
				code: exitOK,
				stdoutHas: []string{
					"VERIFIED\n",
					"signature: verified with key " + kid + " from " + jwksFile + "\n",
					"binding: cnf x5t#S256 " + accesstoken.Thumbprint(leaf) + " matches the certificate in " + certFile + " (" + ststest.WorkloadID + ")\n",
					"subject: " + ststest.WorkloadID + "\n",
					"scope: read write\n",
				},
			}
			if tt.overrideParams != nil {
				tt.overrideParams(&p)
			}
			if tt.overrideExpected != nil {
				tt.overrideExpected(&e)
			}
			args := []string{"verify"}
			for _, f := range [][2]string{{"-jwks", p.jwks}, {"-cert", p.cert}, {"-issuer", p.issuer}, {"-audience", p.audience}} {
				if f[1] != "" {
					args = append(args, f[0], f[1])
				}
			}
			args = append(append(args, p.token...), p.extra...)
			r := runCmd(t, p.stdin, args...)
			e.check(t, r)
		})
	}
}

func mustDecode(t *testing.T, raw string) *decodedToken {
	t.Helper()
	tok, err := decodeToken(raw)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
