package main

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/spiffe-sts/spiffe-sts/exchange/extissuer"
	stsid "github.com/spiffe-sts/spiffe-sts/spiffeid"
	"github.com/spiffe-sts/spiffe-sts/spiffeid/forwarded"
)

// baselineConfig is a valid configuration using every key. Test cases
// change one thing; the line numbers in expected errors refer to it.
const baselineConfig = `server {
  trust_domain        = "example.org"
  issuer_url          = "https://sts.example.org:8443"
  bind_address        = "127.0.0.1:8443"
  data_dir            = "/var/lib/spiffe-sts"
  workload_api_socket = "unix:///run/spire/agent.sock"
  federates_with      = ["partner.example"]
  health_address      = "127.0.0.1:8081"
  log_level           = "debug"
  log_format          = "json"
}

issuer {
  signing_algorithm = "EdDSA"
  default_ttl       = "10m"
}

policy "spiffe://example.org/ns/*/sa/web" {
  audiences      = ["spiffe://example.org/api"]
  scopes         = ["read", "write"]
  default_scopes = ["read"]
  max_ttl        = "2m"
}

policy "spiffe://example.org/ns/prod/sa/db" {
  audiences = ["https://db.example.org"]
}
`

// minimalConfig has only the required keys.
const minimalConfig = `server {
  trust_domain        = "example.org"
  issuer_url          = "https://sts.example.org:8443"
  bind_address        = "127.0.0.1:8443"
  data_dir            = "/var/lib/spiffe-sts"
  workload_api_socket = "unix:///run/spire/agent.sock"
}
`

// baselineExpected is what baselineConfig decodes to, without Policy.
func baselineExpected() *config {
	return &config{
		Server: serverSettings{
			TrustDomain:     spiffeid.RequireTrustDomainFromString("example.org"),
			IssuerURL:       "https://sts.example.org:8443",
			BindAddress:     "127.0.0.1:8443",
			DataDir:         "/var/lib/spiffe-sts",
			WorkloadAPIAddr: "unix:///run/spire/agent.sock",
			FederatesWith:   []spiffeid.TrustDomain{spiffeid.RequireTrustDomainFromString("partner.example")},
			HealthAddress:   "127.0.0.1:8081",
			LogLevel:        hclog.Debug,
			LogJSON:         true,
		},
		Issuer: issuerSettings{Algorithm: jwa.EdDSA(), DefaultTTL: 10 * time.Minute},
		Rules: []stsid.Rule{
			{
				Pattern:       stsid.RequirePattern("spiffe://example.org/ns/*/sa/web"),
				Audiences:     []string{"spiffe://example.org/api"},
				Scopes:        []string{"read", "write"},
				DefaultScopes: []string{"read"},
				MaxTTL:        2 * time.Minute,
			},
			{
				Pattern:   stsid.RequirePattern("spiffe://example.org/ns/prod/sa/db"),
				Audiences: []string{"https://db.example.org"},
				MaxTTL:    10 * time.Minute, // issuer.default_ttl
			},
		},
	}
}

// replace returns an override that replaces old, which must occur in the
// configuration, by new.
func replace(old, new string) func(string) string {
	return func(s string) string {
		if !strings.Contains(s, old) {
			panic("test configuration does not contain " + old)
		}
		return strings.Replace(s, old, new, 1)
	}
}

// deleteLine returns an override that removes the line containing key.
func deleteLine(key string) func(string) string {
	return func(s string) string {
		lines := strings.Split(s, "\n")
		for i, l := range lines {
			if strings.Contains(l, key) {
				return strings.Join(append(lines[:i], lines[i+1:]...), "\n")
			}
		}
		panic("test configuration does not contain " + key)
	}
}

func TestParseConfig(t *testing.T) {
	const webPolicy = `policy "spiffe://example.org/ns/*/sa/web"`
	for _, tc := range []struct {
		name             string
		baseline         string // baselineConfig when empty
		endpointEnv      string // SPIFFE_ENDPOINT_SOCKET
		overrideConfig   func(string) string
		overrideExpected func(*config)
		expectErr        string
	}{
		{
			name: "baseline",
		},
		{
			name:     "defaults",
			baseline: minimalConfig,
			overrideExpected: func(c *config) {
				c.Server.FederatesWith = nil
				c.Server.HealthAddress = ""
				c.Server.LogLevel = hclog.Info
				c.Server.LogJSON = false
				c.Issuer = issuerSettings{Algorithm: jwa.ES256(), DefaultTTL: 5 * time.Minute}
				c.Rules = nil
			},
		},
		{
			name:           "empty issuer block",
			overrideConfig: replace("  signing_algorithm = \"EdDSA\"\n  default_ttl       = \"10m\"\n", ""),
			overrideExpected: func(c *config) {
				c.Issuer = issuerSettings{Algorithm: jwa.ES256(), DefaultTTL: 5 * time.Minute}
				c.Rules[1].MaxTTL = 5 * time.Minute
			},
		},
		{
			name:             "log level trace and text format",
			overrideConfig:   func(s string) string { return replace(`"debug"`, `"trace"`)(replace(`"json"`, `"text"`)(s)) },
			overrideExpected: func(c *config) { c.Server.LogLevel = hclog.Trace; c.Server.LogJSON = false },
		},
		{
			name:             "RS256",
			overrideConfig:   replace(`"EdDSA"`, `"RS256"`),
			overrideExpected: func(c *config) { c.Issuer.Algorithm = jwa.RS256() },
		},
		{
			name:             "workload API socket from the environment",
			endpointEnv:      "unix:///tmp/agent.sock",
			overrideConfig:   deleteLine("workload_api_socket"),
			overrideExpected: func(c *config) { c.Server.WorkloadAPIAddr = "unix:///tmp/agent.sock" },
		},
		{
			name:           "workload_api_socket wins over the environment",
			endpointEnv:    "unix:///tmp/agent.sock",
			overrideConfig: func(s string) string { return s },
		},
		{
			name:           "no workload API socket",
			overrideConfig: deleteLine("workload_api_socket"),
			expectErr:      "sts.hcl:1: server: workload_api_socket: is required when SPIFFE_ENDPOINT_SOCKET is not set",
		},
		{
			name:           "invalid SPIFFE_ENDPOINT_SOCKET",
			endpointEnv:    "/tmp/agent.sock",
			overrideConfig: deleteLine("workload_api_socket"),
			expectErr:      `sts.hcl:1: server: workload_api_socket: not set, and SPIFFE_ENDPOINT_SOCKET "/tmp/agent.sock" is invalid: workload endpoint socket URI must have a "tcp" or "unix" scheme`,
		},
		{
			name:           "invalid workload_api_socket",
			overrideConfig: replace(`"unix:///run/spire/agent.sock"`, `"/run/spire/agent.sock"`),
			expectErr:      `sts.hcl:6: server: workload_api_socket: invalid address "/run/spire/agent.sock": workload endpoint socket URI must have a "tcp" or "unix" scheme`,
		},
		{
			name:             "max_bundle_age and bundle_hard_limit",
			overrideConfig:   replace(`  log_format`, "  max_bundle_age = \"2m\"\n  bundle_hard_limit = \"10m\"\n  log_format"),
			overrideExpected: func(c *config) { c.Server.MaxBundleAge, c.Server.BundleHardLimit = 2*time.Minute, 10*time.Minute },
		},
		{
			name:           "bundle_hard_limit under the default max_bundle_age",
			overrideConfig: replace(`  log_format`, "  bundle_hard_limit = \"1m\"\n  log_format"),
			expectErr:      `sts.hcl:10: server: bundle_hard_limit: must not be shorter than max_bundle_age (5m0s), got "1m"`,
		},
		{
			name:           "trusted proxies",
			overrideConfig: replace(`  log_format`, "  trusted_proxies = [\"spiffe://example.org/ns/ingress/sa/*\"]\n  forwarded_format = \"xfcc\"\n  log_format"),
			overrideExpected: func(c *config) {
				c.Server.TrustedProxies = []stsid.Pattern{stsid.RequirePattern("spiffe://example.org/ns/ingress/sa/*")}
				c.Server.ForwardedFormat = forwarded.FormatXFCC
			},
		},
		{
			name:           "trusted_proxies without forwarded_format",
			overrideConfig: replace(`  log_format`, "  trusted_proxies = [\"spiffe://example.org/ns/ingress/sa/*\"]\n  log_format"),
			expectErr:      `sts.hcl:1: server: forwarded_format: is required with trusted_proxies: "xfcc" or "client-cert"`,
		},
		{
			name:           "forwarded_format without trusted_proxies",
			overrideConfig: replace(`  log_format`, "  forwarded_format = \"client-cert\"\n  log_format"),
			expectErr:      `sts.hcl:1: server: trusted_proxies: is required with forwarded_format: the proxies whose forwarded certificates to believe`,
		},
		{
			name:           "unknown forwarded_format",
			overrideConfig: replace(`  log_format`, "  trusted_proxies = [\"spiffe://example.org/ns/ingress/sa/*\"]\n  forwarded_format = \"haproxy\"\n  log_format"),
			expectErr:      `sts.hcl:11: server: forwarded_format: must be "xfcc" or "client-cert", got "haproxy"`,
		},
		{
			name:           "bad trusted proxy pattern",
			overrideConfig: replace(`  log_format`, "  trusted_proxies = [\"spiffe://example.org/ns/**\"]\n  forwarded_format = \"xfcc\"\n  log_format"),
			expectErr:      `sts.hcl:10: server: trusted_proxies: spiffeid: pattern "spiffe://example.org/ns/**": "**" is not supported; "*" matches exactly one segment`,
		},
		{
			name:             "introspect_audiences",
			overrideConfig:   replace(`  audiences = ["https://db.example.org"]`, `  audiences = ["https://db.example.org"]`+"\n  introspect_audiences = [\"https://orders.example.org\"]"),
			overrideExpected: func(c *config) { c.Rules[1].IntrospectAudiences = []string{"https://orders.example.org"} },
		},
		{
			name:           "introspect_audiences alone",
			overrideConfig: replace(`  audiences = ["https://db.example.org"]`, `  introspect_audiences = ["https://orders.example.org"]`),
			overrideExpected: func(c *config) {
				c.Rules[1].Audiences, c.Rules[1].IntrospectAudiences = nil, []string{"https://orders.example.org"}
			},
		},
		{
			name:           "duplicate introspect audience",
			overrideConfig: replace(`  audiences = ["https://db.example.org"]`, `  introspect_audiences = ["https://o.example.org", "https://o.example.org"]`),
			expectErr:      `sts.hcl:26: policy "spiffe://example.org/ns/prod/sa/db": introspect_audiences: duplicate audience "https://o.example.org"`,
		},
		{
			name:           "empty introspect_audiences",
			overrideConfig: replace(`  audiences = ["https://db.example.org"]`, `  audiences = ["https://db.example.org"]`+"\n  introspect_audiences = []"),
			expectErr:      `sts.hcl:27: policy "spiffe://example.org/ns/prod/sa/db": introspect_audiences: at least one audience is required when set`,
		},
		{
			name: "audit block",
			overrideConfig: func(s string) string {
				return s + "audit {\n  path = \"/var/log/sts/audit.log\"\n  max_size = \"10MiB\"\n  max_files = 3\n  required = true\n}\n"
			},
			overrideExpected: func(c *config) {
				c.Audit = auditSettings{Path: "/var/log/sts/audit.log", MaxSize: 10 << 20, MaxFiles: 3, Required: true}
			},
		},
		{
			name:             "audit to stdout, defaults",
			overrideConfig:   func(s string) string { return s + "audit {\n  path = \"-\"\n}\n" },
			overrideExpected: func(c *config) { c.Audit = auditSettings{Path: "-", MaxSize: 100 << 20, MaxFiles: 5} },
		},
		{
			name:           "audit max_size invalid",
			overrideConfig: func(s string) string { return s + "audit {\n  path = \"/a\"\n  max_size = \"lots\"\n}\n" },
			expectErr:      `sts.hcl:30: audit: max_size: invalid size "lots": want a positive number of bytes, KiB, MiB or GiB (or KB, MB, GB)`,
		},
		{
			name:           "unknown key in server",
			overrideConfig: replace("  log_format", "  bind_adress = \"x\"\n  log_format"),
			expectErr:      `sts.hcl:10: Unsupported argument: An argument named "bind_adress" is not expected here.`,
		},
		{
			name:           "unknown key in issuer",
			overrideConfig: replace(`default_ttl       = "10m"`, `default_ttl = "10m"`+"\n  key_type = \"ec\""),
			expectErr:      `sts.hcl:16: Unsupported argument: An argument named "key_type" is not expected here.`,
		},
		{
			name:           "unknown key in policy",
			overrideConfig: replace(`  max_ttl        = "2m"`, `  max_tll = "2m"`),
			expectErr:      `sts.hcl:22: Unsupported argument: An argument named "max_tll" is not expected here. Did you mean "max_ttl"?`,
		},
		{
			name:           "unknown top-level key",
			overrideConfig: func(s string) string { return s + "trust_domain = \"example.org\"\n" },
			expectErr:      `sts.hcl:28: Unsupported argument: An argument named "trust_domain" is not expected here.`,
		},
		{
			name:           "unknown block",
			overrideConfig: func(s string) string { return s + "telemetry {\n}\n" },
			expectErr:      `sts.hcl:28: Unsupported block type: Blocks of type "telemetry" are not expected here.`,
		},
		{
			name:           "unknown block in server",
			overrideConfig: replace("  log_format", "  tls {\n  }\n  log_format"),
			expectErr:      `sts.hcl:10: Unsupported block type: Blocks of type "tls" are not expected here.`,
		},
		{
			name:           "missing server block",
			baseline:       "issuer {\n}\n",
			expectErr:      "sts.hcl:1: server: block is required",
			overrideConfig: func(s string) string { return s },
		},
		{
			name:           "duplicate server block",
			overrideConfig: func(s string) string { return s + "server {\n}\n" },
			expectErr:      `sts.hcl:28: Duplicate server block: Only one server block is allowed. Another was defined at sts.hcl:1,1-7.`,
		},
		{
			name:           "policy without label",
			overrideConfig: func(s string) string { return s + "policy {\n  audiences = [\"a\"]\n}\n" },
			expectErr:      `sts.hcl:28: Missing pattern for policy: All policy blocks must have 1 labels (pattern).`,
		},
		{
			name:           "wrong type",
			overrideConfig: replace(`audiences = ["https://db.example.org"]`, `audiences = "https://db.example.org"`),
			expectErr:      `sts.hcl:26: Unsuitable value type: Unsuitable value: list of string required, but have string`,
		},
		{
			name:           "HCL syntax error",
			overrideConfig: replace(`data_dir            = "/var/lib/spiffe-sts"`, `data_dir            = "/var/lib/spiffe-sts`),
			expectErr: strings.Join([]string{
				`sts.hcl:5: Invalid multi-line string: Quoted strings may not be split over multiple lines. To produce a multi-line string, either use the \n escape to represent a newline character or use the "heredoc" multi-line template syntax.`,
				`sts.hcl:5: Unterminated template string: No closing marker was found for the string.`,
			}, "\n"),
		},
		{
			name:           "missing brace",
			overrideConfig: replace("issuer {", "issuer"),
			expectErr:      `sts.hcl:13: Argument or block definition required: An argument or block definition is required here. To set an argument, use the equals sign "=" to introduce the argument value.`,
		},
		{
			name:           "bad duration",
			overrideConfig: replace(`"2m"`, `"5x"`),
			expectErr:      `sts.hcl:22: ` + webPolicy + `: max_ttl: invalid duration "5x"`,
		},
		{
			name:           "zero duration",
			overrideConfig: replace(`"2m"`, `"0s"`),
			expectErr:      `sts.hcl:22: ` + webPolicy + `: max_ttl: must be positive, got "0s"`,
		},
		{
			name:           "negative default_ttl",
			overrideConfig: replace(`"10m"`, `"-1m"`),
			expectErr:      `sts.hcl:15: issuer: default_ttl: must be positive, got "-1m"`,
		},
		{
			name:           "bad default_ttl",
			overrideConfig: replace(`"10m"`, `"ten minutes"`),
			expectErr:      `sts.hcl:15: issuer: default_ttl: invalid duration "ten minutes"`,
		},
		{
			name:           "bad trust domain",
			overrideConfig: replace(`"example.org"`, `"Example.org"`),
			expectErr:      `sts.hcl:2: server: trust_domain: invalid trust domain "Example.org": trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores`,
		},
		{
			name:           "bad federated trust domain",
			overrideConfig: replace(`["partner.example"]`, `["partner.example", "spiffe://"]`),
			expectErr:      `sts.hcl:7: server: federates_with: invalid trust domain "spiffe://": trust domain is missing`,
		},
		{
			name:           "federates with itself",
			overrideConfig: replace(`["partner.example"]`, `["example.org"]`),
			expectErr:      `sts.hcl:7: server: federates_with: "example.org" is the server's own trust domain`,
		},
		{
			name:           "duplicate federated trust domain",
			overrideConfig: replace(`["partner.example"]`, `["partner.example", "spiffe://partner.example"]`),
			expectErr:      `sts.hcl:7: server: federates_with: duplicate trust domain "spiffe://partner.example"`,
		},
		{
			name:           "http issuer_url",
			overrideConfig: replace(`"https://sts.example.org:8443"`, `"http://sts.example.org:8443"`),
			expectErr:      `sts.hcl:3: server: issuer_url: must be an https URL`,
		},
		{
			name:           "issuer_url without host",
			overrideConfig: replace(`"https://sts.example.org:8443"`, `"https:///sts"`),
			expectErr:      `sts.hcl:3: server: issuer_url: must be an https URL`,
		},
		{
			name:           "issuer_url with path",
			overrideConfig: replace(`"https://sts.example.org:8443"`, `"https://sts.example.org:8443/sts"`),
			expectErr:      `sts.hcl:3: server: issuer_url: must not have a path`,
		},
		{
			name:           "issuer_url with trailing slash",
			overrideConfig: replace(`"https://sts.example.org:8443"`, `"https://sts.example.org:8443/"`),
			expectErr:      `sts.hcl:3: server: issuer_url: must not end in a slash`,
		},
		{
			name:           "issuer_url with query",
			overrideConfig: replace(`"https://sts.example.org:8443"`, `"https://sts.example.org:8443?a=b"`),
			expectErr:      `sts.hcl:3: server: issuer_url: must not have user info, a query or a fragment`,
		},
		{
			name:           "bad bind address",
			overrideConfig: replace(`"127.0.0.1:8443"`, `"127.0.0.1"`),
			expectErr:      `sts.hcl:4: server: bind_address: invalid address "127.0.0.1": want host:port`,
		},
		{
			name:           "bind address without port",
			overrideConfig: replace(`"127.0.0.1:8443"`, `"127.0.0.1:"`),
			expectErr:      `sts.hcl:4: server: bind_address: invalid address "127.0.0.1:": missing port`,
		},
		{
			name:           "bad health address",
			overrideConfig: replace(`"127.0.0.1:8081"`, `"localhost"`),
			expectErr:      `sts.hcl:8: server: health_address: invalid address "localhost": want host:port`,
		},
		{
			name:           "health address is the bind address",
			overrideConfig: replace(`"127.0.0.1:8081"`, `"127.0.0.1:8443"`),
			expectErr:      `sts.hcl:8: server: health_address: must differ from bind_address`,
		},
		{
			name:           "bad log level",
			overrideConfig: replace(`"debug"`, `"verbose"`),
			expectErr:      `sts.hcl:9: server: log_level: must be trace, debug, info, warn or error, got "verbose"`,
		},
		{
			name:           "bad log format",
			overrideConfig: replace(`"json"`, `"logfmt"`),
			expectErr:      `sts.hcl:10: server: log_format: must be text or json, got "logfmt"`,
		},
		{
			name:           "bad algorithm",
			overrideConfig: replace(`"EdDSA"`, `"HS256"`),
			expectErr:      `sts.hcl:14: issuer: signing_algorithm: unsupported algorithm "HS256": want ES256, EdDSA or RS256`,
		},
		{
			name:           "missing trust_domain",
			overrideConfig: deleteLine("trust_domain"),
			expectErr:      `sts.hcl:1: server: trust_domain: is required`,
		},
		{
			name:           "empty issuer_url",
			overrideConfig: replace(`"https://sts.example.org:8443"`, `""`),
			expectErr:      `sts.hcl:3: server: issuer_url: is required`,
		},
		{
			name:           "missing required keys",
			baseline:       "server {\n}\n",
			endpointEnv:    "unix:///tmp/agent.sock",
			overrideConfig: func(s string) string { return s },
			expectErr: strings.Join([]string{
				`sts.hcl:1: server: trust_domain: is required`,
				`sts.hcl:1: server: issuer_url: is required`,
				`sts.hcl:1: server: bind_address: is required`,
				`sts.hcl:1: server: data_dir: is required`,
			}, "\n"),
		},
		{
			name:           "bad policy pattern",
			overrideConfig: replace(`policy "spiffe://example.org/ns/*/sa/web"`, `policy "spiffe://example.org/ns/**"`),
			expectErr:      `sts.hcl:18: policy "spiffe://example.org/ns/**": pattern: spiffeid: pattern "spiffe://example.org/ns/**": "**" is not supported; "*" matches exactly one segment`,
		},
		{
			name:           "policy pattern without scheme",
			overrideConfig: replace(`policy "spiffe://example.org/ns/prod/sa/db"`, `policy "example.org/ns/prod/sa/db"`),
			expectErr:      `sts.hcl:25: policy "example.org/ns/prod/sa/db": pattern: spiffeid: pattern "example.org/ns/prod/sa/db": scheme must be "spiffe"`,
		},
		{
			name:           "missing audiences",
			overrideConfig: deleteLine(`audiences = ["https://db.example.org"]`),
			expectErr:      `sts.hcl:25: policy "spiffe://example.org/ns/prod/sa/db": audiences: at least one audience is required`,
		},
		{
			name:           "empty audiences",
			overrideConfig: replace(`["https://db.example.org"]`, `[]`),
			expectErr:      `sts.hcl:26: policy "spiffe://example.org/ns/prod/sa/db": audiences: at least one audience is required`,
		},
		{
			name:           "duplicate audience",
			overrideConfig: replace(`["https://db.example.org"]`, `["https://db.example.org", "https://db.example.org"]`),
			expectErr:      `sts.hcl:26: policy "spiffe://example.org/ns/prod/sa/db": audiences: duplicate audience "https://db.example.org"`,
		},
		{
			name:           "default_scopes not a subset of scopes",
			overrideConfig: replace(`default_scopes = ["read"]`, `default_scopes = ["admin"]`),
			expectErr:      `sts.hcl:21: ` + webPolicy + `: default_scopes: default scope "admin" is not in scopes`,
		},
		{
			name:           "invalid scope",
			overrideConfig: replace(`["read", "write"]`, `["read", "read write"]`),
			expectErr:      `sts.hcl:20: ` + webPolicy + `: scopes: scope "read write" contains ' ', which RFC 6749 §3.3 does not allow`,
		},
		{
			name:           "shadowed rule",
			overrideConfig: replace(`"spiffe://example.org/ns/prod/sa/db"`, `"spiffe://example.org/ns/prod/sa/web"`),
			expectErr:      `sts.hcl:25: policy "spiffe://example.org/ns/prod/sa/web": unreachable: ` + webPolicy + ` on line 18 matches every ID it matches`,
		},
		{
			name:           "duplicate rule",
			overrideConfig: replace(`"spiffe://example.org/ns/prod/sa/db"`, `"spiffe://example.org/ns/*/sa/web"`),
			expectErr:      `sts.hcl:25: ` + webPolicy + `: unreachable: ` + webPolicy + ` on line 18 matches every ID it matches`,
		},
		{
			name: "multiple errors",
			overrideConfig: func(s string) string {
				s = replace(`"http`+`s://sts.example.org:8443"`, `"http://sts.example.org:8443"`)(s)
				s = replace(`"debug"`, `"loud"`)(s)
				s = replace(`"10m"`, `"0"`)(s)
				s = replace(`"2m"`, `"2 minutes"`)(s)
				return replace(`policy "spiffe://example.org/ns/prod/sa/db"`, `policy "spiffe://*/db"`)(s)
			},
			expectErr: strings.Join([]string{
				`sts.hcl:3: server: issuer_url: must be an https URL`,
				`sts.hcl:9: server: log_level: must be trace, debug, info, warn or error, got "loud"`,
				`sts.hcl:15: issuer: default_ttl: must be positive, got "0"`,
				`sts.hcl:22: ` + webPolicy + `: max_ttl: invalid duration "2 minutes"`,
				`sts.hcl:25: policy "spiffe://*/db": pattern: spiffeid: pattern "spiffe://*/db": trust domain cannot contain "*"`,
			}, "\n"),
		},
		{
			name: "multiple HCL errors",
			overrideConfig: func(s string) string {
				s = replace("  log_format", "  color = true\n  log_format")(s)
				return replace(`  max_ttl        = "2m"`, `  ttl = "2m"`)(s)
			},
			expectErr: strings.Join([]string{
				`sts.hcl:10: Unsupported argument: An argument named "color" is not expected here.`,
				`sts.hcl:23: Unsupported argument: An argument named "ttl" is not expected here.`,
			}, "\n"),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(endpointSocketEnv, tc.endpointEnv)
			src := tc.baseline
			if src == "" {
				src = baselineConfig
			}
			if tc.overrideConfig != nil {
				src = tc.overrideConfig(src)
			}
			expected := baselineExpected()
			if tc.baseline == minimalConfig {
				expected.Rules = nil
			}
			if tc.overrideExpected != nil {
				tc.overrideExpected(expected)
			}
			checkParseConfig(t, src, expected, tc.expectErr)
		})
	}
}

// configCase is one change to a baseline sts.hcl: the baseline with
// overrideConfig applied parses to the baseline's expected config with
// overrideExpected applied, or fails with expectErr.
type configCase struct {
	name             string
	overrideConfig   func(string) string
	overrideExpected func(*config)
	expectErr        string
}

// runConfigCases runs each case as a subtest against baseline, whose
// parsed config baselineExpected returns, with SPIFFE_ENDPOINT_SOCKET
// unset.
func runConfigCases(t *testing.T, baseline string, baselineExpected func() *config, cases []configCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(endpointSocketEnv, "")
			src := baseline
			if tc.overrideConfig != nil {
				src = tc.overrideConfig(src)
			}
			expected := baselineExpected()
			if tc.overrideExpected != nil {
				tc.overrideExpected(expected)
			}
			checkParseConfig(t, src, expected, tc.expectErr)
		})
	}
}

// checkParseConfig parses src as sts.hcl and checks that it fails with
// expectErr or, when expectErr is "", that it gives expected (with a policy,
// which is not compared).
func checkParseConfig(t *testing.T, src string, expected *config, expectErr string) {
	t.Helper()
	cfg, err := parseConfig("sts.hcl", []byte(src))
	if expectErr != "" {
		if err == nil {
			t.Fatalf("parseConfig succeeded, want error:\n%s", expectErr)
		}
		if got := err.Error(); got != expectErr {
			t.Fatalf("parseConfig error:\n%s\nwant:\n%s", got, expectErr)
		}
		return
	}
	if err != nil {
		t.Fatalf("parseConfig: %v", err)
	}
	if cfg.Policy == nil {
		t.Fatal("Policy is nil")
	}
	cfg.Policy = nil
	if !reflect.DeepEqual(cfg, expected) {
		t.Fatalf("parseConfig:\n%+v\nwant:\n%+v", cfg, expected)
	}
}

// TestParseConfigPolicy checks that the policy is built from the rules in
// file order.
func TestParseConfigPolicy(t *testing.T) {
	cfg, err := parseConfig("sts.hcl", []byte(baselineConfig))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		id        string
		expectAud string // "" when denied
	}{
		{id: "spiffe://example.org/ns/prod/sa/web", expectAud: "spiffe://example.org/api"},
		{id: "spiffe://example.org/ns/prod/sa/db", expectAud: "https://db.example.org"},
		{id: "spiffe://example.org/ns/dev/sa/db"},
		{id: "spiffe://partner.example/ns/prod/sa/web"},
	} {
		rule, ok := cfg.Policy.RuleFor(spiffeid.RequireFromString(tc.id))
		switch {
		case tc.expectAud == "" && ok:
			t.Errorf("%s: got rule %v, want deny", tc.id, rule.Pattern)
		case tc.expectAud != "" && !ok:
			t.Errorf("%s: denied, want audience %s", tc.id, tc.expectAud)
		case ok && !rule.AllowsAudience(tc.expectAud):
			t.Errorf("%s: rule %v does not allow %s", tc.id, rule.Pattern, tc.expectAud)
		}
	}
}

// TestParseConfigErrorType checks that value errors are *configError.
func TestParseConfigErrorType(t *testing.T) {
	_, err := parseConfig("sts.hcl", []byte(replace(`"2m"`, `"5x"`)(baselineConfig)))
	var cfgErr *configError
	if !errors.As(err, &cfgErr) || cfgErr.Line != 22 || cfgErr.File != "sts.hcl" {
		t.Fatalf("error %v is not a *configError at sts.hcl:22", err)
	}
}

// externalConfig is baselineConfig with external issuers and a policy that
// delegates; the line numbers in TestParseConfigExternalIssuers refer to
// it.
const externalConfig = baselineConfig + `
external_issuer "corp" {
  issuer     = "https://idp.example.com"
  jwks_url   = "https://idp.example.com/jwks"
  ca_file    = "/etc/spiffe-sts/corp-ca.pem"
  audience   = "spiffe-sts"
  algorithms = ["RS256", "ES256"]
}

external_issuer "k8s" {
  issuer    = "https://kubernetes.default.svc.cluster.local"
  jwks_file = "/etc/spiffe-sts/k8s-jwks.json"
  audience  = "spiffe-sts"
}

policy "spiffe://example.org/ns/shop/sa/frontend" {
  audiences = ["spiffe://example.org/ns/shop/sa/orders"]

  delegation {
    subjects      = ["spiffe://example.org/ns/shop/sa/checkout", "spiffe://example.org/ns/edge/*"]
    issuers       = ["corp", "k8s"]
    max_depth     = 2
    impersonation = true
  }
}
`

// externalExpected is what externalConfig decodes to, without Policy.
func externalExpected() *config {
	c := baselineExpected()
	c.ExternalIssuers = []externalIssuerSettings{
		{
			Name:       "corp",
			Issuer:     "https://idp.example.com",
			JWKSURL:    "https://idp.example.com/jwks",
			CAFile:     "/etc/spiffe-sts/corp-ca.pem",
			Audience:   "spiffe-sts",
			Algorithms: []jwa.SignatureAlgorithm{jwa.RS256(), jwa.ES256()},
		},
		{
			Name:     "k8s",
			Issuer:   "https://kubernetes.default.svc.cluster.local",
			JWKSFile: "/etc/spiffe-sts/k8s-jwks.json",
			JWKSFileAt: attrAt{
				File: "sts.hcl", Line: 39, Key: `external_issuer "k8s": jwks_file`,
			},
			Audience: "spiffe-sts",
		},
	}
	c.Rules = append(c.Rules, stsid.Rule{
		Pattern:   stsid.RequirePattern("spiffe://example.org/ns/shop/sa/frontend"),
		Audiences: []string{"spiffe://example.org/ns/shop/sa/orders"},
		MaxTTL:    10 * time.Minute,
		Delegation: &stsid.Delegation{
			Subjects: []stsid.Pattern{
				stsid.RequirePattern("spiffe://example.org/ns/shop/sa/checkout"),
				stsid.RequirePattern("spiffe://example.org/ns/edge/*"),
			},
			Issuers:       []string{"corp", "k8s"},
			MaxDepth:      2,
			Impersonation: true,
		},
	})
	return c
}

func TestParseConfigExternalIssuers(t *testing.T) {
	const frontend = `policy "spiffe://example.org/ns/shop/sa/frontend"`
	const delegation = frontend + `: delegation`
	runConfigCases(t, externalConfig, externalExpected, []configCase{
		{
			name: "baseline",
		},
		{
			name:           "default algorithms",
			overrideConfig: deleteLine(`algorithms = ["RS256", "ES256"]`),
			overrideExpected: func(c *config) {
				c.ExternalIssuers[0].Algorithms = nil
				c.ExternalIssuers[1].JWKSFileAt.Line-- // one line up
			},
		},
		{
			name:             "every supported algorithm",
			overrideConfig:   replace(`["RS256", "ES256"]`, `["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]`),
			overrideExpected: func(c *config) { c.ExternalIssuers[0].Algorithms = extissuer.SupportedAlgorithms() },
		},
		{
			name:           "jwks_url without ca_file",
			overrideConfig: deleteLine(`ca_file`),
			overrideExpected: func(c *config) {
				c.ExternalIssuers[0].CAFile = ""
				c.ExternalIssuers[1].JWKSFileAt.Line-- // one line up
			},
		},
		{
			name:             "issuer with a path",
			overrideConfig:   replace(`"https://idp.example.com"`, `"https://login.example.com/tenant/v2.0/"`),
			overrideExpected: func(c *config) { c.ExternalIssuers[0].Issuer = "https://login.example.com/tenant/v2.0/" },
		},
		{
			name:             "delegation to SPIFFE IDs only",
			overrideConfig:   deleteLine(`issuers       = ["corp", "k8s"]`),
			overrideExpected: func(c *config) { c.Rules[2].Delegation.Issuers = nil },
		},
		{
			name:             "delegation to external issuers only",
			overrideConfig:   deleteLine(`subjects      =`),
			overrideExpected: func(c *config) { c.Rules[2].Delegation.Subjects = nil },
		},
		{
			name:             "impersonation defaults to false",
			overrideConfig:   deleteLine(`impersonation = true`),
			overrideExpected: func(c *config) { c.Rules[2].Delegation.Impersonation = false },
		},
		{
			name:           "unknown issuer in delegation",
			overrideConfig: replace(`["corp", "k8s"]`, `["corp", "okta"]`),
			expectErr:      `sts.hcl:48: ` + delegation + `: issuers: unknown external issuer "okta": no external_issuer block has that name`,
		},
		{
			name:           "duplicate issuer in delegation",
			overrideConfig: replace(`["corp", "k8s"]`, `["corp", "corp"]`),
			expectErr:      `sts.hcl:48: ` + delegation + `: issuers: duplicate issuer "corp"`,
		},
		{
			name:           "bad subject pattern",
			overrideConfig: replace(`"spiffe://example.org/ns/edge/*"`, `"spiffe://example.org/ns/edge/**"`),
			expectErr:      `sts.hcl:47: ` + delegation + `: subjects: spiffeid: pattern "spiffe://example.org/ns/edge/**": "**" is not supported; "*" matches exactly one segment`,
		},
		{
			name:           "duplicate subject",
			overrideConfig: replace(`"spiffe://example.org/ns/edge/*"`, `"spiffe://example.org/ns/shop/sa/checkout"`),
			expectErr:      `sts.hcl:47: ` + delegation + `: subjects: duplicate subject "spiffe://example.org/ns/shop/sa/checkout"`,
		},
		{
			name:           "missing max_depth",
			overrideConfig: deleteLine(`max_depth`),
			expectErr:      `sts.hcl:46: ` + delegation + `: max_depth: is required`,
		},
		{
			name:           "zero max_depth",
			overrideConfig: replace(`max_depth     = 2`, `max_depth     = 0`),
			expectErr:      `sts.hcl:49: ` + delegation + `: max_depth: must be positive, got 0`,
		},
		{
			name:           "negative max_depth",
			overrideConfig: replace(`max_depth     = 2`, `max_depth     = -1`),
			expectErr:      `sts.hcl:49: ` + delegation + `: max_depth: must be positive, got -1`,
		},
		{
			name:           "fractional max_depth",
			overrideConfig: replace(`max_depth     = 2`, `max_depth     = 1.5`),
			expectErr:      `sts.hcl:49: Unsuitable value type: Unsuitable value: value must be a whole number, between -9223372036854775808 and 9223372036854775807`,
		},
		{
			name: "no subjects and no issuers",
			overrideConfig: func(s string) string {
				return deleteLine(`subjects      =`)(deleteLine(`issuers       = ["corp", "k8s"]`)(s))
			},
			expectErr: `sts.hcl:46: ` + delegation + `: names no subjects and no issuers`,
		},
		{
			name:             "empty issuers list",
			overrideConfig:   replace(`["corp", "k8s"]`, `[]`),
			overrideExpected: func(c *config) { c.Rules[2].Delegation.Issuers = nil },
		},
		{
			name: "empty subjects and issuers lists",
			overrideConfig: func(s string) string {
				s = replace(`["spiffe://example.org/ns/shop/sa/checkout", "spiffe://example.org/ns/edge/*"]`, `[]`)(s)
				return replace(`["corp", "k8s"]`, `[]`)(s)
			},
			expectErr: `sts.hcl:46: ` + delegation + `: names no subjects and no issuers`,
		},
		{
			name:           "unknown key in delegation",
			overrideConfig: replace(`max_depth     = 2`, `max_depth     = 2`+"\n    depth = 2"),
			expectErr:      `sts.hcl:50: Unsupported argument: An argument named "depth" is not expected here.`,
		},
		{
			name:           "two delegation blocks",
			overrideConfig: replace(`  delegation {`, "  delegation {\n    max_depth = 1\n  }\n  delegation {"),
			expectErr:      `sts.hcl:49: Duplicate delegation block: Only one delegation block is allowed. Another was defined at sts.hcl:46,3-13.`,
		},
		{
			name:           "duplicate external issuer name",
			overrideConfig: replace(`external_issuer "k8s"`, `external_issuer "corp"`),
			expectErr: strings.Join([]string{
				`sts.hcl:37: external_issuer "corp": duplicate name; the first is on line 29`,
				`sts.hcl:48: ` + delegation + `: issuers: unknown external issuer "k8s": no external_issuer block has that name`,
			}, "\n"),
		},
		{
			name:           "invalid external issuer name",
			overrideConfig: replace(`external_issuer "k8s"`, `external_issuer "k8s prod"`),
			expectErr: strings.Join([]string{
				`sts.hcl:37: external_issuer "k8s prod": invalid name "k8s prod": use letters, digits, and ".", "_" or "-" after the first character`,
				`sts.hcl:48: ` + delegation + `: issuers: unknown external issuer "k8s": no external_issuer block has that name`,
			}, "\n"),
		},
		{
			name: "empty external issuer name",
			overrideConfig: func(s string) string {
				return replace(`["corp", "k8s"]`, `["corp"]`)(replace(`external_issuer "k8s"`, `external_issuer ""`)(s))
			},
			expectErr: `sts.hcl:37: external_issuer "": the name (label) must not be empty`,
		},
		{
			name:           "external issuer without label",
			overrideConfig: replace(`external_issuer "k8s" {`, `external_issuer {`),
			expectErr:      `sts.hcl:37: Missing name for external_issuer: All external_issuer blocks must have 1 labels (name).`,
		},
		{
			name:           "unknown key in external issuer",
			overrideConfig: replace(`  jwks_file = "/etc/spiffe-sts/k8s-jwks.json"`, `  jwks = "/etc/spiffe-sts/k8s-jwks.json"`),
			expectErr:      `sts.hcl:39: Unsupported argument: An argument named "jwks" is not expected here.`,
		},
		{
			name:           "missing issuer",
			overrideConfig: deleteLine(`issuer    = "https://kubernetes.default.svc.cluster.local"`),
			expectErr:      `sts.hcl:37: external_issuer "k8s": issuer: is required`,
		},
		{
			name:           "http issuer",
			overrideConfig: replace(`"https://idp.example.com"`, `"http://idp.example.com"`),
			expectErr:      `sts.hcl:30: external_issuer "corp": issuer: "http://idp.example.com" is not an https URL`,
		},
		{
			name:           "issuer with a fragment",
			overrideConfig: replace(`"https://idp.example.com"`, `"https://idp.example.com#corp"`),
			expectErr:      `sts.hcl:30: external_issuer "corp": issuer: "https://idp.example.com#corp" must not have user info, a query or a fragment`,
		},
		{
			name:           "http jwks_url",
			overrideConfig: replace(`"https://idp.example.com/jwks"`, `"http://idp.example.com/jwks"`),
			expectErr:      `sts.hcl:31: external_issuer "corp": jwks_url: "http://idp.example.com/jwks" is not an https URL`,
		},
		{
			name:           "jwks_url without host",
			overrideConfig: replace(`"https://idp.example.com/jwks"`, `"https:///jwks"`),
			expectErr:      `sts.hcl:31: external_issuer "corp": jwks_url: "https:///jwks" is not an https URL`,
		},
		{
			name:           "jwks_url and jwks_file",
			overrideConfig: replace(`  ca_file    = "/etc/spiffe-sts/corp-ca.pem"`, `  jwks_file  = "/etc/spiffe-sts/corp-jwks.json"`),
			expectErr:      `sts.hcl:32: external_issuer "corp": jwks_file: set only one of jwks_url and jwks_file`,
		},
		{
			name:           "neither jwks_url nor jwks_file",
			overrideConfig: deleteLine(`jwks_file = "/etc/spiffe-sts/k8s-jwks.json"`),
			expectErr:      `sts.hcl:37: external_issuer "k8s": one of jwks_url and jwks_file is required`,
		},
		{
			name:           "ca_file with jwks_file",
			overrideConfig: replace(`jwks_file = "/etc/spiffe-sts/k8s-jwks.json"`, `jwks_file = "/etc/spiffe-sts/k8s-jwks.json"`+"\n  ca_file = \"/etc/ca.pem\""),
			expectErr:      `sts.hcl:40: external_issuer "k8s": ca_file: applies to jwks_url only`,
		},
		{
			name:           "missing audience",
			overrideConfig: deleteLine(`audience   = "spiffe-sts"`),
			expectErr:      `sts.hcl:29: external_issuer "corp": audience: is required`,
		},
		{
			name:           "HS256",
			overrideConfig: replace(`["RS256", "ES256"]`, `["RS256", "HS256"]`),
			expectErr:      `sts.hcl:34: external_issuer "corp": algorithms: unsupported algorithm "HS256": want RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512 or EdDSA`,
		},
		{
			name:           "none",
			overrideConfig: replace(`["RS256", "ES256"]`, `["none"]`),
			expectErr:      `sts.hcl:34: external_issuer "corp": algorithms: unsupported algorithm "none": want RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512 or EdDSA`,
		},
		{
			name:           "lower-case algorithm",
			overrideConfig: replace(`["RS256", "ES256"]`, `["rs256"]`),
			expectErr:      `sts.hcl:34: external_issuer "corp": algorithms: unsupported algorithm "rs256": want RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512 or EdDSA`,
		},
		{
			name:           "duplicate algorithm",
			overrideConfig: replace(`["RS256", "ES256"]`, `["RS256", "ES256", "RS256"]`),
			expectErr:      `sts.hcl:34: external_issuer "corp": algorithms: duplicate algorithm "RS256"`,
		},
		{
			name:           "empty algorithms",
			overrideConfig: replace(`["RS256", "ES256"]`, `[]`),
			expectErr:      `sts.hcl:34: external_issuer "corp": algorithms: at least one algorithm is required when set`,
		},
		{
			name: "multiple errors",
			overrideConfig: func(s string) string {
				s = replace(`"https://idp.example.com"`, `"idp.example.com"`)(s)
				s = replace(`  audience  = "spiffe-sts"`, `  audience  = ""`)(s)
				return replace(`max_depth     = 2`, `max_depth     = 0`)(s)
			},
			expectErr: strings.Join([]string{
				`sts.hcl:30: external_issuer "corp": issuer: "idp.example.com" is not an https URL`,
				`sts.hcl:40: external_issuer "k8s": audience: is required`,
				`sts.hcl:49: ` + delegation + `: max_depth: must be positive, got 0`,
			}, "\n"),
		},
	})
}

// TestParseConfigDelegationPolicy checks that delegation reaches the
// policy.
func TestParseConfigDelegationPolicy(t *testing.T) {
	t.Setenv(endpointSocketEnv, "")
	cfg, err := parseConfig("sts.hcl", []byte(externalConfig))
	if err != nil {
		t.Fatal(err)
	}
	rule, ok := cfg.Policy.RuleFor(spiffeid.RequireFromString("spiffe://example.org/ns/shop/sa/frontend"))
	if !ok {
		t.Fatal("no rule for the frontend")
	}
	switch {
	case !rule.MayActForIssuer("corp") || !rule.MayActForIssuer("k8s") || rule.MayActForIssuer("okta"):
		t.Errorf("issuers: %v", rule.Delegation.Issuers)
	case !rule.MayActFor(spiffeid.RequireFromString("spiffe://example.org/ns/edge/proxy")):
		t.Error("may not act for the edge proxy")
	case rule.MayActFor(spiffeid.RequireFromString("spiffe://example.org/ns/shop/sa/orders")):
		t.Error("may act for the orders service")
	case rule.Delegation.MaxDepth != 2 || !rule.Delegation.Impersonation:
		t.Errorf("delegation %+v", rule.Delegation)
	}
	web, _ := cfg.Policy.RuleFor(spiffeid.RequireFromString("spiffe://example.org/ns/prod/sa/web"))
	if web.Delegation != nil {
		t.Errorf("the web rule delegates: %+v", web.Delegation)
	}
}
