// Package cmdutil holds the pieces the commands (cmd/spiffe-sts,
// cmd/spiffe-sts-helper) share: HCL configuration errors located as
// "FILE:LINE: KEY: message", the value parsers of the configuration files
// (log_level, log_format, durations), the dispatch and flag parsing of
// subcommands and the plain-HTTP listener of health endpoints.
//
// Only commands import it; it may log with hclog.
//
//	if diags := gohcl.DecodeBody(file.Body, nil, &fc); diags.HasErrors() {
//		return nil, cmdutil.DiagErrors(diags)
//	}
//	level, err := cmdutil.ParseLogLevel(fc.LogLevel)
//	if err != nil {
//		errs = append(errs, &cmdutil.ConfigError{File: name, Line: line, Key: "log_level", Err: err})
//	}
package cmdutil
