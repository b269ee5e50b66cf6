package cmdutil

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2"
)

// ConfigError is a problem with one value of a configuration file. It
// reads "FILE:LINE: KEY: message", where KEY names the block and attribute
// (`server: issuer_url`, `token "orders.token": audiences`).
type ConfigError struct {
	File string
	Line int
	Key  string
	Err  error
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("%s:%d: %s: %v", e.File, e.Line, e.Key, e.Err)
}

func (e *ConfigError) Unwrap() error { return e.Err }

// DiagError is an HCL diagnostic (syntax error, unknown attribute or block,
// wrong type), rendered as "FILE:LINE: summary: detail". Unknown keys are
// errors because gohcl reports every attribute and block that no field
// (and no "remain" field) takes.
type DiagError struct {
	Diag *hcl.Diagnostic
}

func (e *DiagError) Error() string {
	d := e.Diag
	msg := d.Summary
	if d.Detail != "" {
		msg += ": " + d.Detail
	}
	if d.Subject == nil {
		return msg
	}
	return fmt.Sprintf("%s:%d: %s", d.Subject.Filename, d.Subject.Start.Line, msg)
}

// DiagErrors joins the error diagnostics of diags, in the order of diags.
func DiagErrors(diags hcl.Diagnostics) error {
	var errs []error
	for _, d := range diags {
		if d.Severity == hcl.DiagError {
			errs = append(errs, &DiagError{Diag: d})
		}
	}
	return errors.Join(errs...)
}

// SortedDiagErrors joins the error diagnostics of diags in file order;
// diagnostics without a position come first.
func SortedDiagErrors(diags hcl.Diagnostics) error {
	var errDiags []*hcl.Diagnostic
	for _, d := range diags {
		if d.Severity == hcl.DiagError {
			errDiags = append(errDiags, d)
		}
	}
	slices.SortStableFunc(errDiags, func(a, b *hcl.Diagnostic) int {
		switch {
		case a.Subject == nil || b.Subject == nil:
			return boolInt(b.Subject == nil) - boolInt(a.Subject == nil) // nil first
		case a.Subject.Start.Line != b.Subject.Start.Line:
			return a.Subject.Start.Line - b.Subject.Start.Line
		}
		return a.Subject.Start.Column - b.Subject.Start.Column
	})
	errs := make([]error, len(errDiags))
	for i, d := range errDiags {
		errs[i] = &DiagError{Diag: d}
	}
	return errors.Join(errs...)
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// ParseLogLevel parses log_level: trace, debug, info (the default, also for
// ""), warn or error.
func ParseLogLevel(s string) (hclog.Level, error) {
	switch s {
	case "", "info":
		return hclog.Info, nil
	case "trace":
		return hclog.Trace, nil
	case "debug":
		return hclog.Debug, nil
	case "warn":
		return hclog.Warn, nil
	case "error":
		return hclog.Error, nil
	}
	return hclog.Info, fmt.Errorf("must be trace, debug, info, warn or error, got %q", s)
}

// ParseLogFormat parses log_format: text (the default, also for "") or
// json; it reports whether the format is json.
func ParseLogFormat(s string) (json bool, err error) {
	switch s {
	case "", "text":
		return false, nil
	case "json":
		return true, nil
	}
	return false, fmt.Errorf("must be text or json, got %q", s)
}

// ParseDuration parses a positive duration such as "30s".
func ParseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q", s)
	}
	if d <= 0 {
		return 0, fmt.Errorf("must be positive, got %q", s)
	}
	return d, nil
}
