package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestExitCodes(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.hcl")
	if err := os.WriteFile(good, []byte(baseline), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.hcl")
	if err := os.WriteFile(bad, []byte(baseline+"\nbogus = 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{name: "help", args: []string{"-h"}, wantCode: exitOK},
		{name: "no config", args: nil, wantCode: exitUsage, wantErr: "-config is required"},
		{name: "unknown flag", args: []string{"-nope"}, wantCode: exitUsage},
		{name: "extra argument", args: []string{"-config", good, "run"}, wantCode: exitUsage, wantErr: `unexpected argument "run"`},
		{name: "unreadable config", args: []string{"-config", filepath.Join(dir, "missing.hcl")}, wantCode: exitError, wantErr: "read configuration"},
		{name: "unknown key", args: []string{"-config", bad}, wantCode: exitError, wantErr: `bad.hcl:11: Unsupported argument: An argument named "bogus" is not expected here.`},
		{name: "healthcheck without health_address", args: []string{"-config", good, "-healthcheck"}, wantCode: exitError, wantErr: "-healthcheck needs health_address"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := realMain(tc.args, &stdout, &stderr); code != tc.wantCode {
				t.Fatalf("exit %d, want %d\n%s", code, tc.wantCode, stderr.String())
			}
			if !strings.Contains(stderr.String(), tc.wantErr) {
				t.Fatalf("stderr %q, want %q", stderr.String(), tc.wantErr)
			}
		})
	}
}
