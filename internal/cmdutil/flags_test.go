package cmdutil

import (
	"bytes"
	"flag"
	"testing"
)

func TestParseFlags(t *testing.T) {
	const header = "Usage: cmd -config FILE\n\n"
	for _, tt := range []struct {
		name       string
		args       []string
		wantCode   int
		wantOK     bool
		wantStdout string
		wantStderr string
	}{
		{name: "ok", args: []string{"-config", "a.hcl"}, wantCode: ExitOK, wantOK: true},
		{name: "help", args: []string{"-h"}, wantCode: ExitOK, wantStdout: header + "  -config file\n    \tthe file\n"},
		{name: "bad flag", args: []string{"-nope"}, wantCode: ExitUsage, wantStderr: "flag provided but not defined: -nope\n" + header + "  -config file\n    \tthe file\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("cmd", flag.ContinueOnError)
			fs.String("config", "", "the `file`")
			var stdout, stderr bytes.Buffer
			code, ok := ParseFlags(fs, tt.args, &stdout, &stderr, header)
			if code != tt.wantCode || ok != tt.wantOK {
				t.Errorf("ParseFlags = %d, %v, want %d, %v", code, ok, tt.wantCode, tt.wantOK)
			}
			if stdout.String() != tt.wantStdout {
				t.Errorf("stdout = %q, want %q", stdout.String(), tt.wantStdout)
			}
			if stderr.String() != tt.wantStderr {
				t.Errorf("stderr = %q, want %q", stderr.String(), tt.wantStderr)
			}
		})
	}
}

func TestUsageError(t *testing.T) {
	fs := flag.NewFlagSet("cmd sub", flag.ContinueOnError)
	fs.String("config", "", "the `file`")
	var stderr bytes.Buffer
	if code := UsageError(fs, &stderr, "Usage: cmd sub -config FILE\n\n", "unexpected argument %q", "x"); code != ExitUsage {
		t.Errorf("code = %d, want %d", code, ExitUsage)
	}
	want := "cmd sub: unexpected argument \"x\"\nUsage: cmd sub -config FILE\n\n  -config file\n    \tthe file\n"
	if stderr.String() != want {
		t.Errorf("stderr = %q, want %q", stderr.String(), want)
	}
}

func TestSubcommand(t *testing.T) {
	const usage = "Usage: cmd <command>\n"
	for _, tt := range []struct {
		name       string
		args       []string
		wantCmd    string
		wantRest   []string
		wantCode   int
		wantOK     bool
		wantStdout string
		wantStderr string
	}{
		{name: "command", args: []string{"run", "-config", "a.hcl"}, wantCmd: "run", wantRest: []string{"-config", "a.hcl"}, wantCode: ExitOK, wantOK: true},
		{name: "unknown is the caller's", args: []string{"nope"}, wantCmd: "nope", wantRest: []string{}, wantCode: ExitOK, wantOK: true},
		{name: "none", args: nil, wantCode: ExitUsage, wantStderr: usage},
		{name: "help", args: []string{"help"}, wantCode: ExitOK, wantStdout: usage},
		{name: "-h", args: []string{"-h", "run"}, wantCode: ExitOK, wantStdout: usage},
		{name: "-help", args: []string{"-help"}, wantCode: ExitOK, wantStdout: usage},
		{name: "--help", args: []string{"--help"}, wantCode: ExitOK, wantStdout: usage},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			cmd, rest, code, ok := Subcommand(tt.args, &stdout, &stderr, usage)
			if cmd != tt.wantCmd || code != tt.wantCode || ok != tt.wantOK || len(rest) != len(tt.wantRest) {
				t.Errorf("Subcommand = %q, %q, %d, %v, want %q, %q, %d, %v", cmd, rest, code, ok, tt.wantCmd, tt.wantRest, tt.wantCode, tt.wantOK)
			}
			for i := range tt.wantRest {
				if i < len(rest) && rest[i] != tt.wantRest[i] {
					t.Errorf("rest[%d] = %q, want %q", i, rest[i], tt.wantRest[i])
				}
			}
			if stdout.String() != tt.wantStdout || stderr.String() != tt.wantStderr {
				t.Errorf("stdout, stderr = %q, %q, want %q, %q", stdout.String(), stderr.String(), tt.wantStdout, tt.wantStderr)
			}
		})
	}
}
