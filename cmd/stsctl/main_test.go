package main

import (
	"bytes"
	"context"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/internal/ststest"
)

// result is what a command run produced.
type result struct {
	code           int
	stdout, stderr string
}

// runCmd runs stsctl in-process with args and stdin.
func runCmd(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, strings.NewReader(stdin), &stdout, &stderr)
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// mint returns a token from s's issuer for ststest.WorkloadID, bound to
// its X509-SVID, after override changes the claims.
func mint(t *testing.T, s *ststest.STS, override func(*accesstoken.Claims)) string {
	t.Helper()
	claims := accesstoken.Claims{
		Subject:  ststest.WorkloadID,
		Audience: accesstoken.Audience{ststest.APIAudience},
		ClientID: ststest.WorkloadID,
		Scope:    "read write",
	}
	if override != nil {
		override(&claims)
	}
	leaf := s.WorkloadSVID(t, ststest.WorkloadID).Certificates[0]
	tok, err := s.Issuer.Mint(context.Background(), &claims, leaf, 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// writeFile writes data to name in a temporary directory.
func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func certPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// checkResult compares r with the expected code and the texts stdout and
// stderr must contain, and checks that no token reached stderr.
func checkResult(t *testing.T, r result, code int, stdoutHas, stderrHas []string) {
	t.Helper()
	if r.code != code {
		t.Errorf("exit code = %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, code, r.stdout, r.stderr)
	}
	for _, s := range stdoutHas {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("stdout lacks %q:\n%s", s, r.stdout)
		}
	}
	for _, s := range stderrHas {
		if !strings.Contains(r.stderr, s) {
			t.Errorf("stderr lacks %q:\n%s", s, r.stderr)
		}
	}
	if strings.Contains(r.stderr, "eyJ") {
		t.Errorf("stderr holds what looks like a token:\n%s", r.stderr)
	}
}

// expected is what a table case wants of a command run: its exit code, the
// texts stdout and stderr must contain, and, on failure, nothing on stdout.
type expected struct {
	code      int
	stdoutHas []string
	stderrHas []string
}

// check compares r with e (see checkResult) and checks that a failed run
// wrote nothing to stdout.
func (e expected) check(t *testing.T, r result) {
	t.Helper()
	checkResult(t, r, e.code, e.stdoutHas, e.stderrHas)
	if e.code != exitOK && r.stdout != "" {
		t.Errorf("stdout = %q, want nothing on failure", r.stdout)
	}
}

func TestRun(t *testing.T) {
	tests := []struct {
		name      string
		args      []string
		code      int
		stdoutHas []string
		stderrHas []string
	}{
		{name: "no command", code: exitUsage, stderrHas: []string{"Usage: stsctl <command>", "3  environment error"}},
		{name: "help", args: []string{"-h"}, code: exitOK, stdoutHas: []string{"exchange", "inspect", "verify"}},
		{name: "help command", args: []string{"help", "verify"}, code: exitOK, stderrHas: []string{"Usage: stsctl verify", "-jwks", "Exit codes:"}},
		{name: "command -h", args: []string{"inspect", "-h"}, code: exitOK, stderrHas: []string{"Usage: stsctl inspect [TOKEN | -]", "WITHOUT verifying"}},
		{name: "unknown command", args: []string{"mint"}, code: exitUsage, stderrHas: []string{`stsctl: unknown command "mint"`}},
		{name: "unknown flag", args: []string{"inspect", "-x"}, code: exitUsage, stderrHas: []string{"flag provided but not defined: -x"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkResult(t, runCmd(t, "", tt.args...), tt.code, tt.stdoutHas, tt.stderrHas)
		})
	}
}

func TestInspect(t *testing.T) {
	s := ststest.Start(t, nil)
	leaf := s.WorkloadSVID(t, ststest.WorkloadID).Certificates[0]
	delegated := mint(t, s, func(c *accesstoken.Claims) {
		c.Actor = &accesstoken.Actor{Subject: "spiffe://example.org/b", Actor: &accesstoken.Actor{Subject: "spiffe://example.org/a"}}
	})
	plain := mint(t, s, nil)

	type params struct {
		args  []string
		stdin string
	}
	tests := []struct {
		name             string
		overrideParams   func(*params)
		overrideExpected func(*expected)
	}{
		{
			name: "token argument",
		},
		{
			name:           "token on stdin",
			overrideParams: func(p *params) { p.args, p.stdin = []string{"inspect"}, delegated+"\n" },
		},
		{
			name:           "stdin named by -",
			overrideParams: func(p *params) { p.args, p.stdin = []string{"inspect", "-"}, delegated },
		},
		{
			name:           "no act claim",
			overrideParams: func(p *params) { p.args = []string{"inspect", plain} },
			overrideExpected: func(e *expected) {
				e.stdoutHas = []string{"NOT VERIFIED: decoded only\n", "act: none (the subject acts for itself)"}
			},
		},
		{
			name:           "garbage",
			overrideParams: func(p *params) { p.args = []string{"inspect", "not-a-token"} },
			overrideExpected: func(e *expected) {
				e.code, e.stdoutHas, e.stderrHas = exitInvalid, nil, []string{"stsctl inspect: malformed token: "}
			},
		},
		{
			name:           "claims not JSON",
			overrideParams: func(p *params) { p.args = []string{"inspect", "eyJhbGciOiJFUzI1NiJ9.bm90IGpzb24.c2ln"} },
			overrideExpected: func(e *expected) {
				e.code, e.stdoutHas, e.stderrHas = exitInvalid, nil, []string{"stsctl inspect: malformed token: claims are not a JSON object"}
			},
		},
		{
			name:           "JWS JSON serialization",
			overrideParams: func(p *params) { p.args = []string{"inspect", `{"payload":"e30","signatures":[]}`} },
			overrideExpected: func(e *expected) {
				e.code, e.stdoutHas, e.stderrHas = exitInvalid, nil, []string{"stsctl inspect: malformed token: not a JWS compact serialization"}
			},
		},
		{
			name:           "two tokens",
			overrideParams: func(p *params) { p.args = []string{"inspect", plain, plain} },
			overrideExpected: func(e *expected) {
				e.code, e.stdoutHas, e.stderrHas = exitUsage, nil, []string{"stsctl inspect: usage: expected one token argument, got 2"}
			},
		},
		{
			name:           "empty stdin",
			overrideParams: func(p *params) { p.args = []string{"inspect"} },
			overrideExpected: func(e *expected) {
				e.code, e.stdoutHas, e.stderrHas = exitUsage, nil, []string{"stsctl inspect: usage: no token on stdin"}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := params{args: []string{"inspect", delegated}}
			e := expected{
				code: exitOK,
				stdoutHas: []string{
					"NOT VERIFIED: decoded only\nheader:\n",
					`"typ": "at+jwt"`,
					`"sub": "` + ststest.WorkloadID + `"`,
					"subject: " + ststest.WorkloadID + "\n",
					"issuer: " + s.URL + "\n",
					"audience: " + ststest.APIAudience + "\n",
					"scope: read write\n",
					"act: spiffe://example.org/b <- spiffe://example.org/a\n",
					"binding: cnf x5t#S256 " + accesstoken.Thumbprint(leaf) + "\n",
				},
			}
			if tt.overrideParams != nil {
				tt.overrideParams(&p)
			}
			if tt.overrideExpected != nil {
				tt.overrideExpected(&e)
			}
			r := runCmd(t, p.stdin, p.args...)
			e.check(t, r)
			if e.code == exitOK && !strings.HasPrefix(r.stdout, "NOT VERIFIED: decoded only\n") {
				t.Errorf("first line is not the NOT VERIFIED warning:\n%s", r.stdout)
			}
		})
	}
}
