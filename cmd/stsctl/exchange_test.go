package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/exchange"
	"github.com/spiffe-sts/spiffe-sts/internal/ststest"
)

// source is a static exchangeclient.X509Source, standing in for the
// Workload API.
type source struct {
	*x509svid.SVID
	*spiffebundle.Bundle
}

// TestExchangeWithSource runs the exchange command from the point where it
// has the workload's SVIDs, against a real STS.
func TestExchangeWithSource(t *testing.T) {
	s := ststest.Start(t, nil)
	svid := s.WorkloadSVID(t, ststest.WorkloadID)
	thumb := accesstoken.Thumbprint(svid.Certificates[0])
	kid := mustDecode(t, mint(t, s, nil)).keyID

	// An STS that publishes keys other than those it signs with.
	wrongKeys := ststest.Start(t, nil).Issuer.KeySet()
	badJWKS := ststest.Start(t, func(c *exchange.Config) { c.Keys = wrongKeys })

	type params struct {
		sts          *ststest.STS
		args         []string
		id           string
		subjectToken string
	}
	type expected struct {
		code      int
		stdoutHas []string
		stderrHas []string
		// tokenLine: stdout ends with the token on a line of its own.
		tokenLine bool
		audience  string
	}
	tests := []struct {
		name             string
		overrideParams   func(*params)
		overrideExpected func(*expected)
		check            func(t *testing.T, stdout string)
	}{
		{
			name: "raw token",
			check: func(t *testing.T, stdout string) {
				if strings.Count(stdout, "\n") != 1 {
					t.Errorf("stdout has more than the token:\n%s", stdout)
				}
			},
		},
		{
			name:           "json",
			overrideParams: func(p *params) { p.args = append(p.args, "-output", "json") },
			overrideExpected: func(e *expected) {
				e.tokenLine = false
				e.stdoutHas = []string{`"issued_token_type": "urn:ietf:params:oauth:token-type:access_token"`, `"token_type": "Bearer"`, `"scope": "read"`}
			},
			check: func(t *testing.T, stdout string) {
				var resp tokenJSON
				if err := json.Unmarshal([]byte(stdout), &resp); err != nil {
					t.Fatal(err)
				}
				if resp.ExpiresIn < 298 || resp.ExpiresIn > 300 {
					t.Errorf("expires_in = %d, want about 300", resp.ExpiresIn)
				}
				if _, err := s.Verifier(ststest.APIAudience).Verify(context.Background(), resp.AccessToken, svid.Certificates[0]); err != nil {
					t.Errorf("access_token does not verify: %v", err)
				}
			},
		},
		{
			name:           "claims",
			overrideParams: func(p *params) { p.args = append(p.args, "-output", "claims", "-scope", "read write") },
			overrideExpected: func(e *expected) {
				e.tokenLine = false
				e.stdoutHas = []string{
					"NOT VERIFIED: decoded only\nheader:\n",
					"subject: " + ststest.WorkloadID + "\n",
					"scope: read write\n",
					"act: none (the subject acts for itself)\n",
					"binding: cnf x5t#S256 " + thumb + "\n",
				}
			},
			check: func(t *testing.T, stdout string) {
				if strings.Contains(stdout, "eyJ") {
					t.Errorf("-output claims printed the token:\n%s", stdout)
				}
			},
		},
		{
			name:           "verify",
			overrideParams: func(p *params) { p.args = append(p.args, "-verify", "-resource", ststest.OrdersResource) },
			overrideExpected: func(e *expected) {
				e.stdoutHas = []string{
					"signature: verified with key " + kid + " from " + s.URL + "/jwks\n",
					"claims: iss " + s.URL + " and aud " + ststest.APIAudience + ", " + ststest.OrdersResource + " accepted",
					"binding: cnf x5t#S256 " + thumb + " matches this workload's certificate (" + ststest.WorkloadID + ")\n",
				}
			},
		},
		{
			name:           "verify with claims output",
			overrideParams: func(p *params) { p.args = append(p.args, "-verify", "-output", "claims") },
			overrideExpected: func(e *expected) {
				e.tokenLine = false
				e.stdoutHas = []string{"signature: verified with key ", "binding: cnf x5t#S256 " + thumb + " matches", "header:\n"}
			},
			check: func(t *testing.T, stdout string) {
				if strings.Contains(stdout, "NOT VERIFIED") {
					t.Errorf("a verified token is labelled NOT VERIFIED:\n%s", stdout)
				}
			},
		},
		{
			name: "verification fails",
			overrideParams: func(p *params) {
				p.sts, p.subjectToken = badJWKS, badJWKS.JWTSVID(t, ststest.WorkloadID)
				p.args = []string{"-sts", badJWKS.URL, "-audience", ststest.APIAudience, "-verify"}
			},
			overrideExpected: func(e *expected) {
				e.code, e.tokenLine, e.stdoutHas = exitInvalid, false, nil
				e.stderrHas = []string{"stsctl exchange: invalid token: accesstoken: signature does not verify"}
			},
		},
		{
			name: "client credentials",
			overrideParams: func(p *params) {
				p.args = append(p.args, "-grant", "client-credentials", "-verify")
				p.subjectToken = "ignored"
			},
		},
		{
			name:             "resource only",
			overrideParams:   func(p *params) { p.args = []string{"-sts", p.sts.URL, "-resource", ststest.OrdersResource} },
			overrideExpected: func(e *expected) { e.audience = ststest.OrdersResource },
		},
		{
			name:           "STS ID authorized",
			overrideParams: func(p *params) { p.args = append(p.args, "-sts-id", ststest.ServerID) },
		},
		{
			name:           "wrong STS ID",
			overrideParams: func(p *params) { p.args = append(p.args, "-sts-id", "spiffe://example.org/not-sts") },
			overrideExpected: func(e *expected) {
				e.code, e.tokenLine = exitEnv, false
				e.stderrHas = []string{"stsctl exchange: exchangeclient: token request: ", `unexpected ID "` + ststest.ServerID + `"`}
			},
		},
		{
			name:           "audience refused",
			overrideParams: func(p *params) { p.args = []string{"-sts", p.sts.URL, "-audience", "spiffe://example.org/other"} },
			overrideExpected: func(e *expected) {
				e.code, e.tokenLine = exitInvalid, false
				e.stderrHas = []string{`stsctl exchange: token refused: invalid_target: audience "spiffe://example.org/other" is not allowed for this client` + "\n"}
			},
		},
		{
			name:           "JWT-SVID of another workload",
			overrideParams: func(p *params) { p.subjectToken = p.sts.JWTSVID(t, ststest.OtherID) },
			overrideExpected: func(e *expected) {
				e.code, e.tokenLine = exitInvalid, false
				e.stderrHas = []string{"stsctl exchange: token refused: invalid_grant: "}
			},
		},
		{
			name:           "workload denied by policy",
			overrideParams: func(p *params) { p.id = ststest.DeniedID; p.subjectToken = p.sts.JWTSVID(t, ststest.DeniedID) },
			overrideExpected: func(e *expected) {
				e.code, e.tokenLine = exitInvalid, false
				e.stderrHas = []string{"stsctl exchange: token refused: unauthorized_client: no policy rule allows " + ststest.DeniedID + "\n"}
			},
		},
		{
			name: "STS unreachable",
			overrideParams: func(p *params) {
				p.args = []string{"-sts", "https://127.0.0.1:1", "-audience", ststest.APIAudience, "-timeout", "2s"}
			},
			overrideExpected: func(e *expected) {
				e.code, e.tokenLine = exitEnv, false
				e.stderrHas = []string{"stsctl exchange: exchangeclient: token request: "}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := params{sts: s, id: ststest.WorkloadID}
			p.args = []string{"-sts", s.URL, "-audience", ststest.APIAudience}
			p.subjectToken = s.JWTSVID(t, ststest.WorkloadID)
			e := expected{code: exitOK, tokenLine: true, audience: ststest.APIAudience}
			if tt.overrideParams != nil {
				tt.overrideParams(&p)
			}
			if tt.overrideExpected != nil {
				tt.overrideExpected(&e)
			}
			var stderr bytes.Buffer
			f, code, ok := parseExchangeFlags(p.args, &stderr)
			if !ok {
				t.Fatalf("parseExchangeFlags: exit %d: %s", code, stderr.String())
			}
			src := source{SVID: p.sts.WorkloadSVID(t, p.id), Bundle: p.sts.CA.Bundle()}
			var stdout bytes.Buffer
			code = exchangeWithSource(context.Background(), &f, src, p.subjectToken, &stdout, &stderr)
			r := result{code: code, stdout: stdout.String(), stderr: stderr.String()}
			checkResult(t, r, e.code, e.stdoutHas, e.stderrHas)
			if e.tokenLine {
				lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
				tok := lines[len(lines)-1]
				if _, err := p.sts.Verifier(e.audience).Verify(context.Background(), tok, src.Certificates[0]); err != nil {
					t.Errorf("the last line of stdout is not a valid token: %v\n%s", err, r.stdout)
				}
			} else if strings.Contains(r.stdout, "eyJ") && !strings.Contains(r.stdout, `"access_token"`) {
				t.Errorf("stdout holds a raw token:\n%s", r.stdout)
			}
			if e.code != exitOK && r.stdout != "" && !strings.Contains(tt.name, "verif") {
				t.Errorf("stdout = %q, want nothing on failure", r.stdout)
			}
			if tt.check != nil {
				tt.check(t, r.stdout)
			}
		})
	}
}

func TestExchangeUsage(t *testing.T) {
	const sts = "https://127.0.0.1:8443"
	missingSocket := "unix://" + filepath.Join(t.TempDir(), "missing.sock")
	tests := []struct {
		name      string
		args      []string
		code      int
		stderrHas string
	}{
		{name: "help", args: []string{"-h"}, code: exitOK, stderrHas: "Usage: stsctl exchange -sts URL -audience A [flags]"},
		{name: "missing -sts", args: []string{"-audience", "a"}, code: exitUsage, stderrHas: "stsctl exchange: -sts is required (the STS issuer URL, https://host[:port])\n"},
		{name: "http -sts", args: []string{"-sts", "http://127.0.0.1", "-audience", "a"}, code: exitUsage, stderrHas: "stsctl exchange: -sts must be an https URL (the STS issuer URL, https://host[:port])\n"},
		// The server's issuer URL rule (protocol.CheckIssuerURL).
		{name: "-sts with a path", args: []string{"-sts", sts + "/sts", "-audience", "a"}, code: exitUsage, stderrHas: "stsctl exchange: -sts must not have a path (the STS issuer URL, https://host[:port])\n"},
		{name: "-sts with a trailing slash", args: []string{"-sts", sts + "/", "-audience", "a"}, code: exitUsage, stderrHas: "stsctl exchange: -sts must not end in a slash (the STS issuer URL, https://host[:port])\n"},
		{name: "no audience", args: []string{"-sts", sts}, code: exitUsage, stderrHas: "stsctl exchange: -audience or -resource is required\n"},
		{name: "empty audience", args: []string{"-sts", sts, "-audience", ""}, code: exitUsage, stderrHas: `invalid value "" for flag -audience: must not be empty`},
		{name: "bad -sts-id", args: []string{"-sts", sts, "-audience", "a", "-sts-id", "sts"}, code: exitUsage, stderrHas: "stsctl exchange: -sts-id: "},
		{name: "bad -grant", args: []string{"-sts", sts, "-audience", "a", "-grant", "password"}, code: exitUsage, stderrHas: "-grant must be jwt-svid or client-credentials"},
		{name: "bad -output", args: []string{"-sts", sts, "-audience", "a", "-output", "yaml"}, code: exitUsage, stderrHas: "-output must be token, json or claims"},
		{name: "type without file", args: []string{"-sts", sts, "-audience", "a", "-subject-token-type", "jwt"}, code: exitUsage, stderrHas: "-subject-token-type needs -subject-token-file"},
		{name: "bad type", args: []string{"-sts", sts, "-audience", "a", "-subject-token-file", "f", "-subject-token-type", "saml"}, code: exitUsage, stderrHas: `-subject-token-type: protocol: unsupported token type "saml"`},
		{name: "file with client credentials", args: []string{"-sts", sts, "-audience", "a", "-grant", "client-credentials", "-subject-token-file", "f"}, code: exitUsage, stderrHas: "-subject-token-file does not apply to -grant client-credentials"},
		{name: "argument", args: []string{"-sts", sts, "-audience", "a", "extra"}, code: exitUsage, stderrHas: `unexpected argument "extra"`},
		{name: "zero timeout", args: []string{"-sts", sts, "-audience", "a", "-timeout", "0s"}, code: exitUsage, stderrHas: "-timeout must be positive"},
		{
			name: "Workload API unreachable", code: exitEnv,
			args:      []string{"-sts", sts, "-audience", "a", "-socket", missingSocket, "-timeout", "300ms"},
			stderrHas: "stsctl exchange: X509-SVID from the Workload API: ",
		},
		{
			name: "subject token file missing", code: exitEnv,
			args:      []string{"-sts", sts, "-audience", "a", "-subject-token-file", filepath.Join(t.TempDir(), "missing")},
			stderrHas: "stsctl exchange: subject token: open ",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			r := runCmd(t, "", append([]string{"exchange"}, tt.args...)...)
			checkResult(t, r, tt.code, nil, []string{tt.stderrHas})
			if r.stdout != "" {
				t.Errorf("stdout = %q, want nothing", r.stdout)
			}
			if time.Since(start) > 10*time.Second {
				t.Errorf("took %v", time.Since(start))
			}
		})
	}
}

func TestExchangeNoSocketConfigured(t *testing.T) {
	t.Setenv("SPIFFE_ENDPOINT_SOCKET", "")
	r := runCmd(t, "", "exchange", "-sts", "https://127.0.0.1:8443", "-audience", "a")
	checkResult(t, r, exitEnv, nil, []string{"stsctl exchange: Workload API: ", "(set -socket or SPIFFE_ENDPOINT_SOCKET)"})
}
