package main

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
	"github.com/spiffe-sts/spiffe-sts/helper"
	"github.com/spiffe-sts/spiffe-sts/helper/atomicdir"
	"github.com/spiffe-sts/spiffe-sts/internal/cmdutil"
)

// endpointSocketEnv names the Workload API address when the file has no
// agent_address (SPIFFE Workload Endpoint §4).
const endpointSocketEnv = "SPIFFE_ENDPOINT_SOCKET"

// Defaults of the configuration file.
const (
	defaultCertFile   = "svid.pem"
	defaultKeyFile    = "svid_key.pem"
	defaultBundleFile = "svid_bundle.pem"
	defaultTimeout    = 10 * time.Second
	defaultCmdTimeout = 30 * time.Second
)

// fileConfig is the configuration file as written: top-level attributes in
// the spirit of spiffe-helper, and one token block per token. Values stay
// strings (durations, modes, IDs) until validate translates them; gohcl
// rejects unknown attributes and blocks because no struct has a "remain"
// field.
type fileConfig struct {
	AgentAddress  string       `hcl:"agent_address,optional"`
	IssuerURL     string       `hcl:"issuer_url,optional"`
	STSSPIFFEID   string       `hcl:"sts_spiffe_id,optional"`
	OutputDir     string       `hcl:"output_dir,optional"`
	CertFile      string       `hcl:"cert_file,optional"`
	KeyFile       string       `hcl:"key_file,optional"`
	BundleFile    string       `hcl:"bundle_file,optional"`
	CombinedFile  string       `hcl:"combined_file,optional"`
	FileMode      string       `hcl:"file_mode,optional"`
	DirMode       string       `hcl:"dir_mode,optional"`
	DaemonMode    *bool        `hcl:"daemon_mode,optional"`
	Cmd           string       `hcl:"cmd,optional"`
	CmdArgs       []string     `hcl:"cmd_args,optional"`
	CmdTimeout    string       `hcl:"cmd_timeout,optional"`
	PIDFileName   string       `hcl:"pid_file_name,optional"`
	RenewSignal   string       `hcl:"renew_signal,optional"`
	Listen        string       `hcl:"listen,optional"`
	HealthAddress string       `hcl:"health_address,optional"`
	Timeout       string       `hcl:"timeout,optional"`
	LogLevel      string       `hcl:"log_level,optional"`
	LogFormat     string       `hcl:"log_format,optional"`
	Tokens        []tokenBlock `hcl:"token,block"`
}

type tokenBlock struct {
	Name      string   `hcl:"name,label"`
	Audiences []string `hcl:"audiences,optional"`
	Scopes    []string `hcl:"scopes,optional"`
	Grant     string   `hcl:"grant,optional"`
}

// config is the validated, typed configuration.
type config struct {
	AgentAddress string
	IssuerURL    string
	STSID        spiffeid.ID
	OutputDir    string
	Files        helper.FileNames
	FileMode     fs.FileMode
	DirMode      fs.FileMode
	Daemon       bool
	Tokens       []helper.TokenSpec
	// Cmd and CmdArgs run on every update, for at most CmdTimeout; Cmd is
	// empty for none.
	Cmd        string
	CmdArgs    []string
	CmdTimeout time.Duration
	// PIDFile names the process sent RenewSignal on every update; empty
	// for none.
	PIDFile     string
	RenewSignal syscall.Signal
	// ListenNetwork ("unix" or "tcp") and ListenAddress are the local
	// token endpoint; empty for none.
	ListenNetwork, ListenAddress string
	HealthAddress                string
	Timeout                      time.Duration
	LogLevel                     hclog.Level
	LogJSON                      bool
}

// configError is a problem with one value of the file. It reads
// "FILE:LINE: KEY: message", where KEY names the attribute (`issuer_url`,
// `token "orders.token": audiences`).
type configError = cmdutil.ConfigError

// body locates attributes of the file or of a token block for errors.
type body struct {
	file string
	// prefix is "" for the top level, `token "NAME": ` for a block.
	prefix string
	b      *hclsyntax.Body
	line   int // of the block, or 1
}

func (b body) errorf(attr, format string, args ...any) error {
	line := b.line
	if a, ok := b.b.Attributes[attr]; ok {
		line = a.SrcRange.Start.Line
	}
	return &configError{File: b.file, Line: line, Key: b.prefix + attr, Err: fmt.Errorf(format, args...)}
}

// loadConfig reads and validates the file at path; SPIFFE_ENDPOINT_SOCKET
// is read when the file has no agent_address.
func loadConfig(path string) (*config, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read configuration: %w", err)
	}
	return parseConfig(path, src, os.Getenv(endpointSocketEnv))
}

// parseConfig decodes and validates src; filename names it in errors and
// envSocket is SPIFFE_ENDPOINT_SOCKET. All errors found are returned,
// joined.
func parseConfig(filename string, src []byte, envSocket string) (*config, error) {
	file, diags := hclparse.NewParser().ParseHCL(src, filename)
	if diags.HasErrors() {
		return nil, cmdutil.DiagErrors(diags)
	}
	var fc fileConfig
	if diags := gohcl.DecodeBody(file.Body, nil, &fc); diags.HasErrors() {
		return nil, cmdutil.DiagErrors(diags)
	}
	syn, ok := file.Body.(*hclsyntax.Body)
	if !ok {
		return nil, fmt.Errorf("%s: unexpected HCL body type %T", filename, file.Body)
	}
	top := body{file: filename, b: syn, line: 1}
	// gohcl decodes blocks in file order.
	var tokenAt []body
	for _, blk := range syn.Blocks {
		if blk.Type == "token" {
			tokenAt = append(tokenAt, body{file: filename, prefix: "token " + strconv.Quote(blk.Labels[0]) + ": ", b: blk.Body, line: blk.TypeRange.Start.Line})
		}
	}

	var cfg config
	var errs []error
	fail := func(attr, format string, args ...any) { errs = append(errs, top.errorf(attr, format, args...)) }
	required := func(attr, value string) bool {
		if value == "" {
			fail(attr, "is required")
			return false
		}
		return true
	}

	switch {
	case fc.AgentAddress != "":
		if err := workloadapi.ValidateAddress(fc.AgentAddress); err != nil {
			fail("agent_address", "invalid address %q: %v", fc.AgentAddress, err)
		}
		cfg.AgentAddress = fc.AgentAddress
	case envSocket != "":
		if err := workloadapi.ValidateAddress(envSocket); err != nil {
			fail("agent_address", "not set, and %s %q is invalid: %v", endpointSocketEnv, envSocket, err)
		}
		cfg.AgentAddress = envSocket
	default:
		fail("agent_address", "is required when %s is not set", endpointSocketEnv)
	}
	// Without token blocks the helper writes only the X509-SVID and bundle
	// (for a proxy presenting the SVID itself) and never contacts an STS.
	needSTS := len(fc.Tokens) > 0
	if fc.IssuerURL != "" || needSTS && required("issuer_url", fc.IssuerURL) {
		if err := protocol.CheckIssuerURL(fc.IssuerURL); err != nil {
			fail("issuer_url", "%v", err)
		}
		cfg.IssuerURL = fc.IssuerURL
	}
	if fc.STSSPIFFEID != "" || needSTS && required("sts_spiffe_id", fc.STSSPIFFEID) {
		id, err := spiffeid.FromString(fc.STSSPIFFEID)
		if err != nil {
			fail("sts_spiffe_id", "invalid SPIFFE ID %q: %v", fc.STSSPIFFEID, err)
		}
		cfg.STSID = id
	}
	if required("output_dir", fc.OutputDir) {
		cfg.OutputDir = fc.OutputDir
	}

	seen := map[string]string{} // file name -> attribute that uses it
	fileName := func(at body, attr, value, def string) string {
		if value == "" {
			value = def
		}
		if err := atomicdir.CheckName(value); err != nil {
			errs = append(errs, at.errorf(attr, "%s", strings.TrimPrefix(err.Error(), "atomicdir: ")))
		} else if other, dup := seen[value]; dup {
			errs = append(errs, at.errorf(attr, "file name %q is also used by %s", value, other))
		}
		seen[value] = at.prefix + attr
		return value
	}
	cfg.Files.Cert = fileName(top, "cert_file", fc.CertFile, defaultCertFile)
	cfg.Files.Key = fileName(top, "key_file", fc.KeyFile, defaultKeyFile)
	cfg.Files.Bundle = fileName(top, "bundle_file", fc.BundleFile, defaultBundleFile)
	if fc.CombinedFile != "" {
		cfg.Files.Combined = fileName(top, "combined_file", fc.CombinedFile, "")
	}

	var err error
	if cfg.FileMode, err = parseMode(fc.FileMode, atomicdir.DefaultFileMode, 0o007); err != nil {
		fail("file_mode", "%v", err)
	}
	if cfg.DirMode, err = parseMode(fc.DirMode, atomicdir.DefaultDirMode, 0o022); err != nil {
		fail("dir_mode", "%v", err)
	}
	cfg.Daemon = fc.DaemonMode == nil || *fc.DaemonMode

	for i, tb := range fc.Tokens {
		at := tokenAt[i]
		spec := helper.TokenSpec{Name: tb.Name, Scope: tb.Scopes}
		// The label is the token's file name.
		if err := atomicdir.CheckName(tb.Name); err != nil {
			errs = append(errs, &configError{File: filename, Line: at.line, Key: strings.TrimSuffix(at.prefix, ": "), Err: errors.New(strings.TrimPrefix(err.Error(), "atomicdir: "))})
		} else if other, dup := seen[tb.Name]; dup {
			errs = append(errs, &configError{File: filename, Line: at.line, Key: strings.TrimSuffix(at.prefix, ": "), Err: fmt.Errorf("file name %q is also used by %s", tb.Name, other)})
		}
		seen[tb.Name] = strings.TrimSuffix(at.prefix, ": ")
		if len(tb.Audiences) == 0 {
			errs = append(errs, at.errorf("audiences", "at least one audience is required"))
		}
		for _, aud := range tb.Audiences {
			if aud == "" {
				errs = append(errs, at.errorf("audiences", "empty audience"))
			}
		}
		spec.Audience = tb.Audiences
		switch helper.Grant(tb.Grant) {
		case "", helper.GrantClientCredentials:
			spec.Grant = helper.GrantClientCredentials
		case helper.GrantJWTSVID:
			spec.Grant = helper.GrantJWTSVID
		default:
			errs = append(errs, at.errorf("grant", "must be client_credentials or jwt_svid, got %q", tb.Grant))
		}
		cfg.Tokens = append(cfg.Tokens, spec)
	}

	if fc.Cmd == "" && len(fc.CmdArgs) > 0 {
		fail("cmd_args", "is set without cmd")
	}
	cfg.Cmd, cfg.CmdArgs = fc.Cmd, fc.CmdArgs
	cfg.CmdTimeout = defaultCmdTimeout
	if fc.CmdTimeout != "" {
		if cfg.CmdTimeout, err = parseDuration(fc.CmdTimeout); err != nil {
			fail("cmd_timeout", "%v", err)
		}
	}
	switch {
	case fc.PIDFileName != "" && fc.RenewSignal == "":
		fail("renew_signal", "is required with pid_file_name")
	case fc.PIDFileName == "" && fc.RenewSignal != "":
		fail("pid_file_name", "is required with renew_signal")
	case fc.RenewSignal != "":
		sig, ok := signals[strings.ToUpper(fc.RenewSignal)]
		if !ok {
			fail("renew_signal", "unknown signal %q (want one of %s)", fc.RenewSignal, signalNames())
		}
		cfg.PIDFile, cfg.RenewSignal = fc.PIDFileName, sig
	}

	if fc.Listen != "" {
		if cfg.ListenNetwork, cfg.ListenAddress, err = listenAddress(fc.Listen); err != nil {
			fail("listen", "%v", err)
		}
	}
	if fc.HealthAddress != "" {
		if _, port, err := net.SplitHostPort(fc.HealthAddress); err != nil || port == "" {
			fail("health_address", "invalid address %q: want host:port", fc.HealthAddress)
		}
		cfg.HealthAddress = fc.HealthAddress
	}
	cfg.Timeout = defaultTimeout
	if fc.Timeout != "" {
		if cfg.Timeout, err = parseDuration(fc.Timeout); err != nil {
			fail("timeout", "%v", err)
		}
	}
	if cfg.LogLevel, err = cmdutil.ParseLogLevel(fc.LogLevel); err != nil {
		fail("log_level", "%v", err)
	}
	if cfg.LogJSON, err = cmdutil.ParseLogFormat(fc.LogFormat); err != nil {
		fail("log_format", "%v", err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// signals are the renew_signal values.
var signals = map[string]syscall.Signal{
	"SIGHUP": syscall.SIGHUP, "SIGINT": syscall.SIGINT, "SIGQUIT": syscall.SIGQUIT,
	"SIGTERM": syscall.SIGTERM, "SIGUSR1": syscall.SIGUSR1, "SIGUSR2": syscall.SIGUSR2,
}

func signalNames() string {
	names := make([]string, 0, len(signals))
	for n := range signals {
		names = append(names, n)
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// parseMode parses an octal mode such as "0600"; forbidden are the bits
// that must not be set.
func parseMode(s string, def, forbidden fs.FileMode) (fs.FileMode, error) {
	if s == "" {
		return def, nil
	}
	n, err := strconv.ParseUint(s, 8, 32)
	if err != nil || n > 0o777 {
		return 0, fmt.Errorf("invalid mode %q: want octal permission bits such as \"0600\"", s)
	}
	m := fs.FileMode(n)
	if m&0o700 == 0 {
		return 0, fmt.Errorf("mode %q gives the owner no access", s)
	}
	if m&forbidden != 0 {
		return 0, fmt.Errorf("mode %q grants %04o, which is not allowed", s, uint32(m&forbidden))
	}
	return m, nil
}

// listenAddress checks listen: "unix:///path" (an absolute socket path),
// or a loopback host:port (127.0.0.0/8, ::1, localhost). Anything else is
// refused: the endpoint serves tokens without authentication.
func listenAddress(s string) (network, addr string, err error) {
	if path, ok := strings.CutPrefix(s, "unix://"); ok {
		if !strings.HasPrefix(path, "/") {
			return "", "", fmt.Errorf("invalid address %q: want unix:///absolute/path", s)
		}
		return "unix", path, nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil || port == "" {
		return "", "", fmt.Errorf("invalid address %q: want unix:///path or a loopback host:port", s)
	}
	if host != "localhost" {
		ip, err := netip.ParseAddr(host)
		if err != nil || !ip.IsLoopback() {
			return "", "", fmt.Errorf("address %q is not loopback: the token endpoint listens only on a Unix socket or a loopback address", s)
		}
	}
	return "tcp", s, nil
}

// parseDuration parses a positive duration such as "30s".
func parseDuration(s string) (time.Duration, error) { return cmdutil.ParseDuration(s) }
