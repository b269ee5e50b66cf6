package main

import (
	"cmp"
	"crypto/tls"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/hcl/v2/gohcl"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/spiffe-sts/spiffe-sts/audit"
	"github.com/spiffe-sts/spiffe-sts/exchange"
	"github.com/spiffe-sts/spiffe-sts/exchange/extissuer"
	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
	"github.com/spiffe-sts/spiffe-sts/internal/cmdutil"
	"github.com/spiffe-sts/spiffe-sts/issuer"
	"github.com/spiffe-sts/spiffe-sts/issuer/keyring"
	stsid "github.com/spiffe-sts/spiffe-sts/spiffeid"
	"github.com/spiffe-sts/spiffe-sts/spiffeid/forwarded"
)

// endpointSocketEnv names the Workload API address when the configuration
// file has no workload_api_socket (SPIFFE Workload Endpoint §4).
const endpointSocketEnv = "SPIFFE_ENDPOINT_SOCKET"

// Block names of the configuration file.
const (
	blockServer     = "server"
	blockIssuer     = "issuer"
	blockExternal   = "external_issuer"
	blockPolicy     = "policy"
	blockDelegation = "delegation"
	blockDatastore  = "datastore"
	blockAudit      = "audit"
	blockLimits     = "limits"
	blockRateLimit  = "rate_limit"
)

// Datastore kinds: the label of the datastore block.
const (
	datastoreEmbedded = "embedded"
	datastorePostgres = "postgres"
)

// fileConfig is the configuration file as written. Values stay strings
// (durations, trust domains, patterns) until the section functions below
// translate them; gohcl rejects unknown attributes and blocks because no
// struct has a "remain" field.
type fileConfig struct {
	Server          *serverBlock          `hcl:"server,block"`
	Issuer          *issuerBlock          `hcl:"issuer,block"`
	ExternalIssuers []externalIssuerBlock `hcl:"external_issuer,block"`
	Policies        []policyBlock         `hcl:"policy,block"`
	Datastores      []datastoreBlock      `hcl:"datastore,block"`
	Audit           *auditBlock           `hcl:"audit,block"`
	Limits          *limitsBlock          `hcl:"limits,block"`
}

// limitsBlock bounds what callers and connections may take:
// limits { per_caller_rps = 50  max_in_flight = 1024  ... }.
type limitsBlock struct {
	PerCallerRPS      *float64 `hcl:"per_caller_rps,optional"`
	PerCallerBurst    *int     `hcl:"per_caller_burst,optional"`
	MaxInFlight       *int     `hcl:"max_in_flight,optional"`
	ReadHeaderTimeout string   `hcl:"read_header_timeout,optional"`
	ReadTimeout       string   `hcl:"read_timeout,optional"`
	WriteTimeout      string   `hcl:"write_timeout,optional"`
	IdleTimeout       string   `hcl:"idle_timeout,optional"`
	TLSMinVersion     string   `hcl:"tls_min_version,optional"`
}

// rateLimitBlock is a policy block's rate_limit { rps = 10  burst = 20 },
// or rate_limit { unlimited = true }.
type rateLimitBlock struct {
	RPS       *float64 `hcl:"rps,optional"`
	Burst     *int     `hcl:"burst,optional"`
	Unlimited bool     `hcl:"unlimited,optional"`
}

// auditBlock is where the audit trail goes: audit { path = "..." | "-" }.
type auditBlock struct {
	Path     string `hcl:"path,optional"`
	MaxSize  string `hcl:"max_size,optional"`
	MaxFiles *int   `hcl:"max_files,optional"`
	Required bool   `hcl:"required,optional"`
}

type serverBlock struct {
	TrustDomain       string   `hcl:"trust_domain,optional"`
	IssuerURL         string   `hcl:"issuer_url,optional"`
	BindAddress       string   `hcl:"bind_address,optional"`
	DataDir           string   `hcl:"data_dir,optional"`
	WorkloadAPISocket string   `hcl:"workload_api_socket,optional"`
	FederatesWith     []string `hcl:"federates_with,optional"`
	HealthAddress     string   `hcl:"health_address,optional"`
	LogLevel          string   `hcl:"log_level,optional"`
	LogFormat         string   `hcl:"log_format,optional"`
	JWKSMaxAge        string   `hcl:"jwks_max_age,optional"`
	MaxBundleAge      string   `hcl:"max_bundle_age,optional"`
	BundleHardLimit   string   `hcl:"bundle_hard_limit,optional"`
	TrustedProxies    []string `hcl:"trusted_proxies,optional"`
	ForwardedFormat   string   `hcl:"forwarded_format,optional"`
}

type issuerBlock struct {
	SigningAlgorithm  string `hcl:"signing_algorithm,optional"`
	DefaultTTL        string `hcl:"default_ttl,optional"`
	RotationPeriod    string `hcl:"rotation_period,optional"`
	PublicationWindow string `hcl:"publication_window,optional"`
}

// datastoreBlock is where the signing-key ring lives, shaped like SPIRE's
// DataStore plugin block: `datastore "embedded" {}` or
// `datastore "postgres" {}`.
type datastoreBlock struct {
	Kind                 string `hcl:"kind,label"`
	ConnectionString     string `hcl:"connection_string,optional"`
	ConnectionStringFile string `hcl:"connection_string_file,optional"`
	KEKFile              string `hcl:"key_encryption_key_file,optional"`
	RefreshInterval      string `hcl:"refresh_interval,optional"`
}

type policyBlock struct {
	Pattern       string   `hcl:"pattern,label"`
	Audiences     []string `hcl:"audiences,optional"`
	Scopes        []string `hcl:"scopes,optional"`
	DefaultScopes []string `hcl:"default_scopes,optional"`
	MaxTTL        string   `hcl:"max_ttl,optional"`
	// IntrospectAudiences are the token audiences, besides its own
	// SPIFFE ID, that the caller may introspect (RFC 7662).
	IntrospectAudiences []string `hcl:"introspect_audiences,optional"`

	Delegation *delegationBlock `hcl:"delegation,block"`
	RateLimit  *rateLimitBlock  `hcl:"rate_limit,block"`
}

type externalIssuerBlock struct {
	Name       string   `hcl:"name,label"`
	Issuer     string   `hcl:"issuer,optional"`
	JWKSURL    string   `hcl:"jwks_url,optional"`
	JWKSFile   string   `hcl:"jwks_file,optional"`
	CAFile     string   `hcl:"ca_file,optional"`
	Audience   string   `hcl:"audience,optional"`
	Algorithms []string `hcl:"algorithms,optional"`
}

type delegationBlock struct {
	Subjects      []string `hcl:"subjects,optional"`
	Issuers       []string `hcl:"issuers,optional"`
	MaxDepth      *int     `hcl:"max_depth,optional"`
	Impersonation bool     `hcl:"impersonation,optional"`
}

// config is the validated, typed configuration.
type config struct {
	Server serverSettings
	Issuer issuerSettings
	// ExternalIssuers are the external_issuer blocks in file order.
	ExternalIssuers []externalIssuerSettings
	// Rules are the policy blocks in file order; Policy is built from them.
	Rules  []stsid.Rule
	Policy *stsid.Policy
	// Datastore is the datastore block; its zero value is
	// datastore "embedded" {}.
	Datastore datastoreSettings
	// Audit is the audit block; its zero value (no block) writes no audit
	// trail.
	Audit auditSettings
	// Limits is the limits block; its zero value (no block) is exchange's
	// defaults: no per-caller rate limit, exchange.DefaultMaxInFlight, the
	// default timeouts and TLS 1.2.
	Limits limitsSettings
}

// limitsSettings is the limits block; zero fields are exchange's
// defaults.
type limitsSettings struct {
	// DefaultRateLimit is per_caller_rps and per_caller_burst; nil when
	// per_caller_rps is absent or 0 (callers of rules without a
	// rate_limit are not limited).
	DefaultRateLimit *stsid.RateLimit
	MaxInFlight      int
	// The http.Server timeouts of the TLS listener.
	ReadHeaderTimeout, ReadTimeout, WriteTimeout, IdleTimeout time.Duration
	// TLSMinVersion is tls.VersionTLS12 or tls.VersionTLS13; zero for
	// exchange.DefaultTLSMinVersion.
	TLSMinVersion uint16
}

// auditSettings is the audit block.
type auditSettings struct {
	// Path is the audit file, audit.Stdout ("-") for stdout, or empty for
	// no audit trail.
	Path     string
	MaxSize  int64
	MaxFiles int
	// Required fails closed: no token is served unaudited.
	Required bool
}

// serverSettings is the server block.
type serverSettings struct {
	TrustDomain spiffeid.TrustDomain
	IssuerURL   string
	BindAddress string
	DataDir     string
	// WorkloadAPIAddr is workload_api_socket, or SPIFFE_ENDPOINT_SOCKET
	// when that is absent.
	WorkloadAPIAddr string
	FederatesWith   []spiffeid.TrustDomain
	// HealthAddress is empty when there is no health listener.
	HealthAddress string
	LogLevel      hclog.Level
	LogJSON       bool
	// JWKSMaxAge is jwks_max_age; zero for exchange.DefaultJWKSMaxAge.
	JWKSMaxAge time.Duration
	// MaxBundleAge and BundleHardLimit are max_bundle_age and
	// bundle_hard_limit; zero for exchange's defaults (5m, and three times
	// max_bundle_age).
	MaxBundleAge, BundleHardLimit time.Duration
	// TrustedProxies and ForwardedFormat are trusted_proxies and
	// forwarded_format, both set or neither: the proxies whose forwarded
	// client certificates the server believes (see forwardedPolicy).
	TrustedProxies  []stsid.Pattern
	ForwardedFormat forwarded.Format
}

// forwardedPolicy returns the trusted-proxy policy of the server block,
// verifying forwarded certificates against bundles; nil when the server
// is not behind proxies.
func (s serverSettings) forwardedPolicy(bundles x509bundle.Source) (*forwarded.Policy, error) {
	if s.ForwardedFormat.IsZero() {
		return nil, nil
	}
	return forwarded.New(forwarded.Config{Format: s.ForwardedFormat, TrustedProxies: s.TrustedProxies, Bundles: bundles})
}

// issuerSettings is the issuer block, defaults applied except for the
// key ring's schedule, whose zero values mean the defaults (see schedule).
type issuerSettings struct {
	Algorithm  jwa.SignatureAlgorithm
	DefaultTTL time.Duration
	// RotationPeriod is rotation_period; zero for
	// keyring.DefaultRotationPeriod.
	RotationPeriod time.Duration
	// PublicationWindow is publication_window; zero for twice the JWKS
	// max-age.
	PublicationWindow time.Duration
}

// datastoreSettings is the datastore block. Its files are read only by
// run and the keys commands (see openRing).
type datastoreSettings struct {
	// Kind is datastorePostgres, or empty for the embedded ring file.
	Kind string
	// ConnectionString or ConnectionStringFile (exactly one, for postgres)
	// locate the database. The connection string is never logged.
	ConnectionString     string
	ConnectionStringFile string
	// KEKFile holds the key-encryption key; required for postgres.
	KEKFile string
	// At locate the file attributes, for the errors of reading them.
	ConnectionStringFileAt, KEKFileAt attrAt
	// RefreshInterval is how often the ring is re-read; zero for
	// keyring.DefaultRefreshInterval.
	RefreshInterval time.Duration
}

// externalIssuerSettings is an external_issuer block. Its files and URL
// are used only by run (see newExternalIssuers).
type externalIssuerSettings struct {
	Name     string
	Issuer   string
	JWKSURL  string
	JWKSFile string
	// JWKSFileAt locates jwks_file in the configuration file, for the
	// errors of reading it; zero without jwks_file.
	JWKSFileAt attrAt
	// CAFile is the PEM bundle trusted for JWKSURL; empty for the system
	// roots.
	CAFile   string
	Audience string
	// Algorithms is nil for extissuer.DefaultAlgorithms.
	Algorithms []jwa.SignatureAlgorithm
}

// attrAt locates an attribute of the configuration file, for a configError
// found after parsing.
type attrAt struct {
	File string
	Line int
	Key  string
}

// errorf returns a configError for the attribute.
func (a attrAt) errorf(format string, args ...any) error {
	return &configError{File: a.File, Line: a.Line, Key: a.Key, Err: fmt.Errorf(format, args...)}
}

// configError is a problem with one value of the configuration file. It
// reads "FILE:LINE: KEY: message", where KEY names the block and attribute
// (`server: issuer_url`, `policy "spiffe://example.org/x": max_ttl`).
type configError = cmdutil.ConfigError

// blockAt locates a block of the file for error messages.
type blockAt struct {
	file  string
	name  string // "server", `policy "spiffe://..."`, `policy "spiffe://...": delegation`
	block *hclsyntax.Block
	// line is used when block is nil (an absent block).
	line int
}

// line returns the line of attribute attr of the block, or the line of
// the block itself when attr is empty or not set.
func (b blockAt) lineOf(attr string) int {
	if b.block == nil {
		return b.line
	}
	if a, ok := b.block.Body.Attributes[attr]; ok {
		return a.SrcRange.Start.Line
	}
	return b.block.TypeRange.Start.Line
}

// child locates the first nested block of type typ; the result has no
// block when there is none.
func (b blockAt) child(typ string) blockAt {
	c := blockAt{file: b.file, name: b.name + ": " + typ, line: b.lineOf("")}
	if b.block != nil {
		for _, nested := range b.block.Body.Blocks {
			if nested.Type == typ {
				c.block = nested
				break
			}
		}
	}
	return c
}

// has reports whether attribute attr is set in the block.
func (b blockAt) has(attr string) bool {
	if b.block == nil {
		return false
	}
	_, ok := b.block.Body.Attributes[attr]
	return ok
}

// errorf returns a configError for attr of the block; attr may be empty for
// the block as a whole.
func (b blockAt) errorf(attr, format string, args ...any) error {
	key := b.name
	if attr != "" {
		key += ": " + attr
	}
	return &configError{File: b.file, Line: b.lineOf(attr), Key: key, Err: fmt.Errorf(format, args...)}
}

// durationAttr is an optional duration attribute of a block: its name,
// its value as written ("" when absent), and where the parsed value goes.
type durationAttr struct {
	attr, value string
	dst         *time.Duration
}

// durations parses the duration attributes of the block that are set,
// and returns an error for each that does not parse.
func (b blockAt) durations(attrs ...durationAttr) []error {
	var errs []error
	for _, d := range attrs {
		if d.value == "" {
			continue
		}
		v, err := parseDuration(d.value)
		if err != nil {
			errs = append(errs, b.errorf(d.attr, "%v", err))
		} else {
			*d.dst = v
		}
	}
	return errs
}

// loadConfig reads and validates the configuration file at path. It touches
// no other file and no network; SPIFFE_ENDPOINT_SOCKET is read when the
// file has no workload_api_socket.
func loadConfig(path string) (*config, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read configuration: %w", err)
	}
	return parseConfig(path, src)
}

// parseConfig decodes and validates src; filename names it in errors. All
// errors found are returned, joined.
func parseConfig(filename string, src []byte) (*config, error) {
	file, diags := hclparse.NewParser().ParseHCL(src, filename)
	if diags.HasErrors() {
		return nil, cmdutil.SortedDiagErrors(diags)
	}
	var fc fileConfig
	if diags := gohcl.DecodeBody(file.Body, nil, &fc); diags.HasErrors() {
		return nil, cmdutil.SortedDiagErrors(diags)
	}
	body, ok := file.Body.(*hclsyntax.Body)
	if !ok {
		return nil, fmt.Errorf("%s: unexpected HCL body type %T", filename, file.Body)
	}

	// gohcl decodes blocks in file order, so the n-th decoded block of a
	// type is the n-th block of that type in the syntax tree.
	var serverAt, issuerAt, auditAt, limitsAt blockAt
	var externalAt, policyAt, datastoreAt []blockAt
	for _, b := range body.Blocks {
		at := blockAt{file: filename, name: b.Type, block: b}
		switch b.Type {
		case blockServer:
			serverAt = at
		case blockIssuer:
			issuerAt = at
		case blockAudit:
			auditAt = at
		case blockLimits:
			limitsAt = at
		case blockExternal:
			at.name = blockExternal + " " + strconv.Quote(b.Labels[0])
			externalAt = append(externalAt, at)
		case blockPolicy:
			at.name = blockPolicy + " " + strconv.Quote(b.Labels[0])
			policyAt = append(policyAt, at)
		case blockDatastore:
			at.name = blockDatastore + " " + strconv.Quote(b.Labels[0])
			datastoreAt = append(datastoreAt, at)
		}
	}

	var cfg config
	var errs []error
	var err error
	if fc.Server == nil {
		missing := blockAt{file: filename, name: blockServer, line: body.SrcRange.Start.Line}
		errs = append(errs, missing.errorf("", "block is required"))
	} else {
		cfg.Server, err = serverConfig(fc.Server, serverAt)
		errs = append(errs, err)
	}
	cfg.Issuer, err = issuerConfig(fc.Issuer, issuerAt)
	errs = append(errs, err)
	errs = append(errs, checkSchedule(cfg.Issuer, cfg.Server.JWKSMaxAge, issuerAt, serverAt))
	cfg.Datastore, err = datastoreConfig(fc.Datastores, datastoreAt)
	errs = append(errs, err)
	cfg.Audit, err = auditConfig(fc.Audit, auditAt)
	errs = append(errs, err)
	cfg.Limits, err = limitsConfig(fc.Limits, limitsAt)
	errs = append(errs, err)
	cfg.ExternalIssuers, err = externalIssuers(fc.ExternalIssuers, externalAt)
	errs = append(errs, err)
	// Delegation may name every external_issuer block, even one with
	// errors: those are reported once, above.
	issuerNames := make([]string, len(fc.ExternalIssuers))
	for i, b := range fc.ExternalIssuers {
		issuerNames[i] = b.Name
	}
	cfg.Rules, err = policyRules(fc.Policies, policyAt, cfg.Issuer.DefaultTTL, issuerNames)
	errs = append(errs, err)
	if err == nil {
		cfg.Policy, err = newPolicy(cfg.Rules, policyAt)
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return &cfg, nil
}

// serverConfig translates the server block.
func serverConfig(b *serverBlock, at blockAt) (serverSettings, error) {
	var s serverSettings
	var errs []error
	fail := func(attr, format string, args ...any) {
		errs = append(errs, at.errorf(attr, format, args...))
	}
	required := func(attr, value string) bool {
		if value == "" {
			fail(attr, "is required")
			return false
		}
		return true
	}

	if required("trust_domain", b.TrustDomain) {
		td, err := spiffeid.TrustDomainFromString(b.TrustDomain)
		if err != nil {
			fail("trust_domain", "invalid trust domain %q: %v", b.TrustDomain, err)
		}
		s.TrustDomain = td
	}
	if required("issuer_url", b.IssuerURL) {
		if err := protocol.CheckIssuerURL(b.IssuerURL); err != nil {
			fail("issuer_url", "%v", err)
		}
		s.IssuerURL = b.IssuerURL
	}
	if required("bind_address", b.BindAddress) {
		if err := checkHostPort(b.BindAddress); err != nil {
			fail("bind_address", "%v", err)
		}
		s.BindAddress = b.BindAddress
	}
	if required("data_dir", b.DataDir) {
		s.DataDir = b.DataDir
	}

	switch {
	case b.WorkloadAPISocket != "":
		if err := workloadapi.ValidateAddress(b.WorkloadAPISocket); err != nil {
			fail("workload_api_socket", "invalid address %q: %v", b.WorkloadAPISocket, err)
		}
		s.WorkloadAPIAddr = b.WorkloadAPISocket
	case os.Getenv(endpointSocketEnv) != "":
		addr := os.Getenv(endpointSocketEnv)
		if err := workloadapi.ValidateAddress(addr); err != nil {
			fail("workload_api_socket", "not set, and %s %q is invalid: %v", endpointSocketEnv, addr, err)
		}
		s.WorkloadAPIAddr = addr
	default:
		fail("workload_api_socket", "is required when %s is not set", endpointSocketEnv)
	}

	for _, name := range b.FederatesWith {
		td, err := spiffeid.TrustDomainFromString(name)
		switch {
		case err != nil:
			fail("federates_with", "invalid trust domain %q: %v", name, err)
			continue
		case !s.TrustDomain.IsZero() && td == s.TrustDomain:
			fail("federates_with", "%q is the server's own trust domain", name)
			continue
		case slices.Contains(s.FederatesWith, td):
			fail("federates_with", "duplicate trust domain %q", name)
			continue
		}
		s.FederatesWith = append(s.FederatesWith, td)
	}

	if b.HealthAddress != "" {
		if err := checkHostPort(b.HealthAddress); err != nil {
			fail("health_address", "%v", err)
		} else if b.HealthAddress == b.BindAddress {
			fail("health_address", "must differ from bind_address")
		}
		s.HealthAddress = b.HealthAddress
	}

	if level, err := cmdutil.ParseLogLevel(b.LogLevel); err != nil {
		fail("log_level", "%v", err)
	} else {
		s.LogLevel = level
	}
	if json, err := cmdutil.ParseLogFormat(b.LogFormat); err != nil {
		fail("log_format", "%v", err)
	} else {
		s.LogJSON = json
	}
	if b.JWKSMaxAge != "" {
		d, err := parseDuration(b.JWKSMaxAge)
		switch {
		case err != nil:
			fail("jwks_max_age", "%v", err)
		case d%time.Second != 0:
			fail("jwks_max_age", "must be whole seconds (Cache-Control max-age), got %q", b.JWKSMaxAge)
		default:
			s.JWKSMaxAge = d
		}
	}
	maxAge := exchange.DefaultMaxBundleAge
	if b.MaxBundleAge != "" {
		d, err := parseDuration(b.MaxBundleAge)
		if err != nil {
			fail("max_bundle_age", "%v", err)
		}
		s.MaxBundleAge, maxAge = d, d
	}
	if b.BundleHardLimit != "" {
		d, err := parseDuration(b.BundleHardLimit)
		switch {
		case err != nil:
			fail("bundle_hard_limit", "%v", err)
		case d < maxAge:
			fail("bundle_hard_limit", "must not be shorter than max_bundle_age (%s), got %q", maxAge, b.BundleHardLimit)
		}
		s.BundleHardLimit = d
	}
	for k, raw := range b.TrustedProxies {
		p, err := stsid.ParsePattern(raw)
		switch {
		case err != nil:
			fail("trusted_proxies", "%v", err)
		case slices.Contains(b.TrustedProxies[:k], raw):
			fail("trusted_proxies", "duplicate pattern %q", raw)
		default:
			s.TrustedProxies = append(s.TrustedProxies, p)
		}
	}
	switch {
	case b.ForwardedFormat != "":
		f, err := forwarded.ParseFormat(b.ForwardedFormat)
		if err != nil {
			fail("forwarded_format", "must be %q or %q, got %q", forwarded.FormatXFCC, forwarded.FormatClientCert, b.ForwardedFormat)
		}
		s.ForwardedFormat = f
		if len(b.TrustedProxies) == 0 {
			fail("trusted_proxies", "is required with forwarded_format: the proxies whose forwarded certificates to believe")
		}
	case at.has("trusted_proxies"):
		fail("forwarded_format", "is required with trusted_proxies: %q or %q", forwarded.FormatXFCC, forwarded.FormatClientCert)
	}
	return s, errors.Join(errs...)
}

// auditConfig translates the audit block (nil: no audit trail).
func auditConfig(b *auditBlock, at blockAt) (auditSettings, error) {
	var s auditSettings
	if b == nil {
		return s, nil
	}
	var errs []error
	fail := func(attr, format string, args ...any) {
		errs = append(errs, at.errorf(attr, format, args...))
	}
	if b.Path == "" {
		fail("path", `is required: a file, or "-" for stdout`)
	}
	s.Path, s.Required = b.Path, b.Required
	s.MaxSize = audit.DefaultMaxSize
	if b.MaxSize != "" {
		n, err := parseSize(b.MaxSize)
		if err != nil {
			fail("max_size", "%v", err)
		}
		s.MaxSize = n
	}
	s.MaxFiles = audit.DefaultMaxFiles
	if b.MaxFiles != nil {
		if *b.MaxFiles < 1 {
			fail("max_files", "must be at least 1, got %d", *b.MaxFiles)
		}
		s.MaxFiles = *b.MaxFiles
	}
	if b.Path == audit.Stdout && (b.MaxSize != "" || b.MaxFiles != nil) {
		fail("path", `is "-" (stdout): max_size and max_files apply to a file only`)
	}
	return s, errors.Join(errs...)
}

// limitsConfig translates the limits block (nil: the defaults).
func limitsConfig(b *limitsBlock, at blockAt) (limitsSettings, error) {
	var s limitsSettings
	if b == nil {
		return s, nil
	}
	var errs []error
	fail := func(attr, format string, args ...any) {
		errs = append(errs, at.errorf(attr, format, args...))
	}
	switch {
	case b.PerCallerRPS != nil && *b.PerCallerRPS != 0:
		var err error
		s.DefaultRateLimit, err = rateLimit(*b.PerCallerRPS, b.PerCallerBurst, at, "per_caller_rps", "per_caller_burst")
		errs = append(errs, err)
	case b.PerCallerBurst != nil:
		fail("per_caller_burst", "applies with a per_caller_rps above 0 only")
	}
	if b.MaxInFlight != nil {
		if *b.MaxInFlight < 1 {
			fail("max_in_flight", "must be at least 1, got %d", *b.MaxInFlight)
		}
		s.MaxInFlight = *b.MaxInFlight
	}
	errs = append(errs, at.durations(
		durationAttr{"read_header_timeout", b.ReadHeaderTimeout, &s.ReadHeaderTimeout},
		durationAttr{"read_timeout", b.ReadTimeout, &s.ReadTimeout},
		durationAttr{"write_timeout", b.WriteTimeout, &s.WriteTimeout},
		durationAttr{"idle_timeout", b.IdleTimeout, &s.IdleTimeout},
	)...)
	readHeader, read := cmp.Or(s.ReadHeaderTimeout, exchange.DefaultReadHeaderTimeout), cmp.Or(s.ReadTimeout, exchange.DefaultReadTimeout)
	if readHeader > read {
		attr := "read_header_timeout"
		if s.ReadHeaderTimeout == 0 {
			attr = "read_timeout"
		}
		fail(attr, "read_header_timeout (%s) must not be longer than read_timeout (%s), which covers the headers too", readHeader, read)
	}
	switch b.TLSMinVersion {
	case "":
	case "1.2":
		s.TLSMinVersion = tls.VersionTLS12
	case "1.3":
		s.TLSMinVersion = tls.VersionTLS13
	default:
		fail("tls_min_version", `must be "1.2" or "1.3", got %q`, b.TLSMinVersion)
	}
	return s, errors.Join(errs...)
}

// rateLimit is the token bucket of rps and burst, the attributes rpsAttr
// and burstAttr of the block at: rps at least one request an hour
// (stsid.MinRatePerSecond), burst at least 1 and, when absent, one
// second's worth of rps (at least 1).
func rateLimit(rps float64, burst *int, at blockAt, rpsAttr, burstAttr string) (*stsid.RateLimit, error) {
	var errs []error
	l := &stsid.RateLimit{PerSecond: rps, Burst: int(min(max(math.Ceil(rps), 1), math.MaxInt32))}
	switch {
	case !(rps > 0) || math.IsInf(rps, 0):
		errs = append(errs, at.errorf(rpsAttr, "must be a positive number of requests a second, got %v", rps))
	case rps < stsid.MinRatePerSecond:
		errs = append(errs, at.errorf(rpsAttr, "must be at least 1/3600 (one request an hour), got %v", rps))
	}
	if burst != nil {
		if *burst < 1 {
			errs = append(errs, at.errorf(burstAttr, "must be at least 1, got %d", *burst))
		}
		l.Burst = *burst
	}
	return l, errors.Join(errs...)
}

// sizeUnits are the suffixes parseSize accepts, longest first.
var sizeUnits = []struct {
	suffix string
	factor int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1},
}

// parseSize parses a positive size such as "100MiB", "10MB" or "4096".
func parseSize(s string) (int64, error) {
	num, factor := s, int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(s, u.suffix) {
			num, factor = strings.TrimSuffix(s, u.suffix), u.factor
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/factor {
		return 0, fmt.Errorf("invalid size %q: want a positive number of bytes, KiB, MiB or GiB (or KB, MB, GB)", s)
	}
	return n * factor, nil
}

// checkHostPort checks a listen address; the host may be empty (all
// interfaces), the port may not.
func checkHostPort(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("invalid address %q: want host:port", addr)
	}
	if port == "" {
		return fmt.Errorf("invalid address %q: missing port", addr)
	}
	return nil
}

// issuerConfig translates the optional issuer block; b is nil when it is
// absent. DefaultTTL is always usable, even when the error is not nil.
func issuerConfig(b *issuerBlock, at blockAt) (issuerSettings, error) {
	s := issuerSettings{Algorithm: jwa.ES256(), DefaultTTL: issuer.DefaultTTL}
	if b == nil {
		return s, nil
	}
	var errs []error
	if b.SigningAlgorithm != "" {
		alg, err := issuer.ParseAlgorithm(b.SigningAlgorithm)
		if err != nil {
			errs = append(errs, at.errorf("signing_algorithm", "unsupported algorithm %q: want ES256, EdDSA or RS256", b.SigningAlgorithm))
		} else {
			s.Algorithm = alg
		}
	}
	errs = append(errs, at.durations(
		durationAttr{"default_ttl", b.DefaultTTL, &s.DefaultTTL},
		durationAttr{"rotation_period", b.RotationPeriod, &s.RotationPeriod},
		durationAttr{"publication_window", b.PublicationWindow, &s.PublicationWindow},
	)...)
	return s, errors.Join(errs...)
}

// schedule returns the key ring's rotation period and publication window,
// defaults applied: keyring.DefaultRotationPeriod, and twice the JWKS
// max-age (jwksMaxAge, zero for exchange.DefaultJWKSMaxAge), so that a
// verifier that refreshes the JWKS only when its cached copy expires has a
// new key before any replica signs with it.
func (s issuerSettings) schedule(jwksMaxAge time.Duration) (rotation, window time.Duration) {
	rotation, window = s.RotationPeriod, s.PublicationWindow
	if rotation == 0 {
		rotation = keyring.DefaultRotationPeriod
	}
	if window == 0 {
		if jwksMaxAge == 0 {
			jwksMaxAge = exchange.DefaultJWKSMaxAge
		}
		window = 2 * jwksMaxAge
	}
	return rotation, window
}

// checkSchedule checks that the publication window is shorter than the
// rotation period, as keyring.Schedule requires, and locates the error at
// the attribute that set the offending value.
func checkSchedule(s issuerSettings, jwksMaxAge time.Duration, issuerAt, serverAt blockAt) error {
	rotation, window := s.schedule(jwksMaxAge)
	if window < rotation {
		return nil
	}
	switch {
	case s.PublicationWindow != 0:
		return issuerAt.errorf("publication_window", "must be shorter than the rotation period (%s), got %s", rotation, window)
	case serverAt.has("jwks_max_age") && !issuerAt.has("rotation_period"):
		return serverAt.errorf("jwks_max_age", "twice it, the default publication window (%s), must be shorter than the rotation period (%s)", window, rotation)
	}
	return issuerAt.errorf("rotation_period", "must be longer than the publication window (%s), got %s", window, rotation)
}

// datastoreConfig translates the datastore blocks; at[i] locates
// blocks[i]. There is at most one; none is datastore "embedded" {}. It
// checks them without reading their files.
func datastoreConfig(blocks []datastoreBlock, at []blockAt) (datastoreSettings, error) {
	var s datastoreSettings
	if len(blocks) == 0 {
		return s, nil
	}
	var errs []error
	for i := 1; i < len(blocks); i++ {
		errs = append(errs, at[i].errorf("", "only one datastore block is allowed; the first is on line %d", at[0].lineOf("")))
	}
	b, a := blocks[0], at[0]
	fail := func(attr, format string, args ...any) {
		errs = append(errs, a.errorf(attr, format, args...))
	}
	fileAt := func(attr string) attrAt {
		return attrAt{File: a.file, Line: a.lineOf(attr), Key: a.name + ": " + attr}
	}
	switch b.Kind {
	case datastoreEmbedded:
		for _, attr := range []string{"connection_string", "connection_string_file"} {
			if a.has(attr) {
				fail(attr, "applies to datastore %q only", datastorePostgres)
			}
		}
	case datastorePostgres:
		s.Kind = datastorePostgres
		switch {
		case b.ConnectionString == "" && b.ConnectionStringFile == "":
			fail("", "one of connection_string and connection_string_file is required")
		case b.ConnectionString != "" && b.ConnectionStringFile != "":
			fail("connection_string_file", "set only one of connection_string and connection_string_file")
		}
		s.ConnectionString = b.ConnectionString
		if b.ConnectionStringFile != "" {
			s.ConnectionStringFile, s.ConnectionStringFileAt = b.ConnectionStringFile, fileAt("connection_string_file")
		}
		if b.KEKFile == "" {
			fail("key_encryption_key_file", "is required for datastore %q: the keys in a shared database must be encrypted", datastorePostgres)
		}
	default:
		fail("", "unknown datastore %q: want %q or %q", b.Kind, datastoreEmbedded, datastorePostgres)
	}
	if b.KEKFile != "" {
		s.KEKFile, s.KEKFileAt = b.KEKFile, fileAt("key_encryption_key_file")
	}
	if b.RefreshInterval != "" {
		d, err := parseDuration(b.RefreshInterval)
		if err != nil {
			fail("refresh_interval", "%v", err)
		} else {
			s.RefreshInterval = d
		}
	}
	return s, errors.Join(errs...)
}

// maxTokenTTL returns the longest lifetime a token of cfg can have: the
// issuer's default TTL or the longest max_ttl of the policy rules. A
// retired key stays published this long after it stopped signing.
func (cfg *config) maxTokenTTL() time.Duration {
	return maxTokenTTL(cfg.Issuer.DefaultTTL, cfg.Rules)
}

func maxTokenTTL(defaultTTL time.Duration, rules []stsid.Rule) time.Duration {
	m := defaultTTL
	for _, r := range rules {
		m = max(m, r.MaxTTL)
	}
	return m
}

// externalIssuers translates the external_issuer blocks; at[i] locates
// blocks[i]. It checks them without reading their files or fetching their
// URLs.
func externalIssuers(blocks []externalIssuerBlock, at []blockAt) ([]externalIssuerSettings, error) {
	var issuers []externalIssuerSettings
	var errs []error
	for i, b := range blocks {
		fail := func(attr, format string, args ...any) {
			errs = append(errs, at[i].errorf(attr, format, args...))
		}
		s := externalIssuerSettings{
			Name:     b.Name,
			Issuer:   b.Issuer,
			JWKSURL:  b.JWKSURL,
			JWKSFile: b.JWKSFile,
			CAFile:   b.CAFile,
			Audience: b.Audience,
		}
		if err := checkIssuerName(b.Name); err != nil {
			fail("", "%v", err)
		}
		for j := range i {
			if blocks[j].Name == b.Name {
				fail("", "duplicate name; the first is on line %d", at[j].lineOf(""))
				break
			}
		}
		if err := extissuer.CheckIssuerURL(b.Issuer); err != nil {
			fail("issuer", "%v", err)
		}
		switch {
		case b.JWKSURL == "" && b.JWKSFile == "":
			fail("", "one of jwks_url and jwks_file is required")
		case b.JWKSURL != "" && b.JWKSFile != "":
			fail("jwks_file", "set only one of jwks_url and jwks_file")
		case b.JWKSURL != "":
			if err := extissuer.CheckJWKSURL(b.JWKSURL); err != nil {
				fail("jwks_url", "%v", err)
			}
		}
		if b.CAFile != "" && b.JWKSURL == "" {
			fail("ca_file", "applies to jwks_url only")
		}
		if b.JWKSFile != "" {
			s.JWKSFileAt = attrAt{File: at[i].file, Line: at[i].lineOf("jwks_file"), Key: at[i].name + ": jwks_file"}
		}
		if b.Audience == "" {
			fail("audience", "is required")
		}
		if at[i].has("algorithms") && len(b.Algorithms) == 0 {
			fail("algorithms", "at least one algorithm is required when set")
		}
		for k, name := range b.Algorithms {
			alg, err := extissuer.ParseAlgorithm(name)
			switch {
			case err != nil:
				fail("algorithms", "unsupported algorithm %q: want %s", name, algorithmNames(extissuer.SupportedAlgorithms()))
			case slices.Contains(b.Algorithms[:k], name):
				fail("algorithms", "duplicate algorithm %q", name)
			default:
				s.Algorithms = append(s.Algorithms, alg)
			}
		}
		issuers = append(issuers, s)
	}
	return issuers, errors.Join(errs...)
}

// checkIssuerName checks an external_issuer label: letters, digits, and
// ".", "_" and "-" after the first character.
func checkIssuerName(name string) error {
	if name == "" {
		return errors.New("the name (label) must not be empty")
	}
	for k, c := range name {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case k > 0 && (c == '.' || c == '_' || c == '-'):
		default:
			return fmt.Errorf("invalid name %q: use letters, digits, and \".\", \"_\" or \"-\" after the first character", name)
		}
	}
	return nil
}

// algorithmNames lists algs as "A, B or C".
func algorithmNames(algs []jwa.SignatureAlgorithm) string {
	names := make([]string, len(algs))
	for i, alg := range algs {
		names[i] = alg.String()
	}
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

// policyRules translates the policy blocks; at[i] locates blocks[i]. A
// rule without max_ttl gets defaultTTL. Delegation may name the external
// issuers issuerNames.
func policyRules(blocks []policyBlock, at []blockAt, defaultTTL time.Duration, issuerNames []string) ([]stsid.Rule, error) {
	var rules []stsid.Rule
	var errs []error
	for i, b := range blocks {
		r := stsid.Rule{
			Audiences:           b.Audiences,
			Scopes:              b.Scopes,
			DefaultScopes:       b.DefaultScopes,
			MaxTTL:              defaultTTL,
			IntrospectAudiences: b.IntrospectAudiences,
		}
		var err error
		if r.Pattern, err = stsid.ParsePattern(b.Pattern); err != nil {
			errs = append(errs, at[i].errorf("pattern", "%v", err))
		}
		if len(b.Audiences) == 0 && len(b.IntrospectAudiences) == 0 {
			errs = append(errs, at[i].errorf("audiences", "at least one audience is required"))
		}
		if at[i].has("introspect_audiences") && len(b.IntrospectAudiences) == 0 {
			errs = append(errs, at[i].errorf("introspect_audiences", "at least one audience is required when set"))
		}
		if b.MaxTTL != "" {
			if r.MaxTTL, err = parseDuration(b.MaxTTL); err != nil {
				errs = append(errs, at[i].errorf("max_ttl", "%v", err))
			}
		}
		if b.Delegation != nil {
			var err error
			r.Delegation, err = delegation(b.Delegation, at[i].child(blockDelegation), issuerNames)
			errs = append(errs, err)
		}
		if b.RateLimit != nil {
			var err error
			r.RateLimit, err = ruleRateLimit(b.RateLimit, at[i].child(blockRateLimit))
			errs = append(errs, err)
		}
		rules = append(rules, r)
	}
	return rules, errors.Join(errs...)
}

// ruleRateLimit translates the rate_limit block of a policy block: rps
// and burst, or unlimited = true alone.
func ruleRateLimit(b *rateLimitBlock, at blockAt) (*stsid.RateLimit, error) {
	switch {
	case b.Unlimited && (b.RPS != nil || b.Burst != nil):
		return nil, at.errorf("unlimited", "takes no rps or burst")
	case b.Unlimited:
		return &stsid.RateLimit{Unlimited: true}, nil
	case b.RPS == nil:
		return nil, at.errorf("rps", "is required")
	case *b.RPS == 0:
		return nil, at.errorf("rps", "must be a positive number of requests a second, got 0 (unlimited = true exempts the rule's callers)")
	}
	return rateLimit(*b.RPS, b.Burst, at, "rps", "burst")
}

// delegation translates the delegation block of a policy block.
// stsid.NewPolicy checks the rest (subjects or issuers must be set).
func delegation(b *delegationBlock, at blockAt, issuerNames []string) (*stsid.Delegation, error) {
	var errs []error
	fail := func(attr, format string, args ...any) {
		errs = append(errs, at.errorf(attr, format, args...))
	}
	d := &stsid.Delegation{Impersonation: b.Impersonation}
	for k, s := range b.Subjects {
		p, err := stsid.ParsePattern(s)
		switch {
		case err != nil:
			fail("subjects", "%v", err)
		case slices.Contains(b.Subjects[:k], s):
			fail("subjects", "duplicate subject %q", s)
		default:
			d.Subjects = append(d.Subjects, p)
		}
	}
	for k, name := range b.Issuers {
		switch {
		case !slices.Contains(issuerNames, name):
			fail("issuers", "unknown external issuer %q: no external_issuer block has that name", name)
		case slices.Contains(b.Issuers[:k], name):
			fail("issuers", "duplicate issuer %q", name)
		default:
			d.Issuers = append(d.Issuers, name)
		}
	}
	switch {
	case b.MaxDepth == nil:
		fail("max_depth", "is required")
	case *b.MaxDepth <= 0:
		fail("max_depth", "must be positive, got %d", *b.MaxDepth)
	default:
		d.MaxDepth = *b.MaxDepth
	}
	return d, errors.Join(errs...)
}

// newPolicy builds the policy and locates its errors; at[i] locates
// rules[i].
func newPolicy(rules []stsid.Rule, at []blockAt) (*stsid.Policy, error) {
	p, err := stsid.NewPolicy(rules)
	if err == nil {
		return p, nil
	}
	var ruleErr *stsid.RuleError
	if errors.As(err, &ruleErr) && ruleErr.Index < len(at) {
		if ruleErr.Field == blockDelegation || ruleErr.Field == blockRateLimit {
			return nil, at[ruleErr.Index].child(ruleErr.Field).errorf("", "%v", ruleErr.Err)
		}
		return nil, at[ruleErr.Index].errorf(ruleErr.Field, "%v", ruleErr.Err)
	}
	var shadowed *stsid.ShadowedRuleError
	if errors.As(err, &shadowed) && shadowed.Index < len(at) && shadowed.By < len(at) {
		by := at[shadowed.By]
		return nil, at[shadowed.Index].errorf("", "unreachable: %s on line %d matches every ID it matches", by.name, by.lineOf(""))
	}
	return nil, err
}

// parseDuration parses a positive duration such as "5m".
func parseDuration(s string) (time.Duration, error) { return cmdutil.ParseDuration(s) }
