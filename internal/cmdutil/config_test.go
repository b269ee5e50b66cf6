package cmdutil

import (
	"errors"
	"io/fs"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"
)

func TestConfigError(t *testing.T) {
	err := &ConfigError{File: "a.hcl", Line: 3, Key: `token "x": audiences`, Err: fs.ErrInvalid}
	if got, want := err.Error(), `a.hcl:3: token "x": audiences: invalid argument`; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if !errors.Is(err, fs.ErrInvalid) {
		t.Error("errors.Is(err, fs.ErrInvalid) = false")
	}
}

func TestDiagErrors(t *testing.T) {
	at := func(line int) *hcl.Range {
		return &hcl.Range{Filename: "a.hcl", Start: hcl.Pos{Line: line, Column: 1}}
	}
	diags := hcl.Diagnostics{
		{Severity: hcl.DiagError, Summary: "Unsupported argument", Detail: "An argument named \"x\" is not expected here.", Subject: at(7)},
		{Severity: hcl.DiagWarning, Summary: "ignored", Subject: at(1)},
		{Severity: hcl.DiagError, Summary: "Missing brace", Subject: at(2)},
		{Severity: hcl.DiagError, Summary: "no position"},
	}
	for _, tt := range []struct {
		name string
		fn   func(hcl.Diagnostics) error
		want string
	}{
		{"as found", DiagErrors, "a.hcl:7: Unsupported argument: An argument named \"x\" is not expected here.\na.hcl:2: Missing brace\nno position"},
		{"sorted", SortedDiagErrors, "no position\na.hcl:2: Missing brace\na.hcl:7: Unsupported argument: An argument named \"x\" is not expected here."},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.fn(diags).Error(); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
			if err := tt.fn(nil); err != nil {
				t.Errorf("no diagnostics: got %v, want nil", err)
			}
		})
	}
}

func TestParseLogLevel(t *testing.T) {
	for _, tt := range []struct {
		in        string
		want      hclog.Level
		expectErr string
	}{
		{in: "", want: hclog.Info},
		{in: "info", want: hclog.Info},
		{in: "trace", want: hclog.Trace},
		{in: "debug", want: hclog.Debug},
		{in: "warn", want: hclog.Warn},
		{in: "error", want: hclog.Error},
		{in: "INFO", expectErr: `must be trace, debug, info, warn or error, got "INFO"`},
	} {
		got, err := ParseLogLevel(tt.in)
		if tt.expectErr != "" {
			if err == nil || err.Error() != tt.expectErr {
				t.Errorf("ParseLogLevel(%q) error = %v, want %q", tt.in, err, tt.expectErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseLogLevel(%q) = %v, %v, want %v", tt.in, got, err, tt.want)
		}
	}
}

func TestParseLogFormat(t *testing.T) {
	for _, tt := range []struct {
		in        string
		want      bool
		expectErr string
	}{
		{in: ""},
		{in: "text"},
		{in: "json", want: true},
		{in: "logfmt", expectErr: `must be text or json, got "logfmt"`},
	} {
		got, err := ParseLogFormat(tt.in)
		if tt.expectErr != "" {
			if err == nil || err.Error() != tt.expectErr {
				t.Errorf("ParseLogFormat(%q) error = %v, want %q", tt.in, err, tt.expectErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseLogFormat(%q) = %v, %v, want %v", tt.in, got, err, tt.want)
		}
	}
}

func TestParseDuration(t *testing.T) {
	for _, tt := range []struct {
		in        string
		want      time.Duration
		expectErr string
	}{
		{in: "30s", want: 30 * time.Second},
		{in: "thirty", expectErr: `invalid duration "thirty"`},
		{in: "", expectErr: `invalid duration ""`},
		{in: "0s", expectErr: `must be positive, got "0s"`},
		{in: "-1m", expectErr: `must be positive, got "-1m"`},
	} {
		got, err := ParseDuration(tt.in)
		if tt.expectErr != "" {
			if err == nil || err.Error() != tt.expectErr {
				t.Errorf("ParseDuration(%q) error = %v, want %q", tt.in, err, tt.expectErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseDuration(%q) = %v, %v, want %v", tt.in, got, err, tt.want)
		}
	}
}
