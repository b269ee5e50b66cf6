package main

import (
	"crypto/tls"
	"strings"
	"testing"
	"time"

	stsid "github.com/spiffe-sts/spiffe-sts/spiffeid"
)

// limitsFile is baselineConfig with a limits block and a rate_limit in
// the db policy; the line numbers in expected errors refer to it.
var limitsFile = strings.Replace(baselineConfig, `  audiences = ["https://db.example.org"]
}`, `  audiences = ["https://db.example.org"]
  rate_limit {
    rps   = 2.5
    burst = 10
  }
}

limits {
  per_caller_rps      = 50
  per_caller_burst    = 100
  max_in_flight       = 256
  read_header_timeout = "5s"
  read_timeout        = "20s"
  write_timeout       = "25s"
  idle_timeout        = "90s"
  tls_min_version     = "1.3"
}`, 1)

func limitsExpected() *config {
	c := baselineExpected()
	c.Rules[1].RateLimit = &stsid.RateLimit{PerSecond: 2.5, Burst: 10}
	c.Limits = limitsSettings{
		DefaultRateLimit:  &stsid.RateLimit{PerSecond: 50, Burst: 100},
		MaxInFlight:       256,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       20 * time.Second,
		WriteTimeout:      25 * time.Second,
		IdleTimeout:       90 * time.Second,
		TLSMinVersion:     tls.VersionTLS13,
	}
	return c
}

// TestParseConfigLimits checks the limits block and the rate_limit block
// of a policy: values, defaults, and errors naming file, line and key.
func TestParseConfigLimits(t *testing.T) {
	const db = `policy "spiffe://example.org/ns/prod/sa/db"`
	// rpsRefused is the case of the db rule's rps set to value, refused
	// with msg.
	rpsRefused := func(name, value, msg string) configCase {
		return configCase{name: name, overrideConfig: replace("rps   = 2.5", "rps   = "+value), expectErr: "sts.hcl:28: " + db + ": rate_limit: rps: " + msg}
	}
	runConfigCases(t, limitsFile, limitsExpected, []configCase{
		{name: "baseline"},
		{
			name:             "no limits block: the defaults",
			overrideConfig:   func(s string) string { return s[:strings.Index(s, "\nlimits {")] + "\n" },
			overrideExpected: func(c *config) { c.Limits = limitsSettings{} },
		},
		{
			name:             "per_caller_rps 0: no default rate limit",
			overrideConfig:   func(s string) string { return deleteLine("per_caller_burst")(replace("= 50", "= 0")(s)) },
			overrideExpected: func(c *config) { c.Limits.DefaultRateLimit = nil },
		},
		{
			name:             "burst defaults to a second's worth",
			overrideConfig:   func(s string) string { return deleteLine("burst = 10")(deleteLine("per_caller_burst")(s)) },
			overrideExpected: func(c *config) { c.Rules[1].RateLimit.Burst, c.Limits.DefaultRateLimit.Burst = 3, 50 },
		},
		{
			name:             "burst of a rate under 1/s defaults to 1",
			overrideConfig:   func(s string) string { return deleteLine("burst = 10")(replace("rps   = 2.5", "rps   = 0.1")(s)) },
			overrideExpected: func(c *config) { c.Rules[1].RateLimit = &stsid.RateLimit{PerSecond: 0.1, Burst: 1} },
		},
		{
			name:             "TLS 1.2",
			overrideConfig:   replace(`"1.3"`, `"1.2"`),
			overrideExpected: func(c *config) { c.Limits.TLSMinVersion = tls.VersionTLS12 },
		},
		rpsRefused("negative rps", "-1", "must be a positive number of requests a second, got -1"),
		rpsRefused("zero rps in a rule", "0", "must be a positive number of requests a second, got 0 (unlimited = true exempts the rule's callers)"),
		{
			name:             "one request an hour",
			overrideConfig:   replace("rps   = 2.5", "rps   = 0.000278"),
			overrideExpected: func(c *config) { c.Rules[1].RateLimit.PerSecond = 0.000278 },
		},
		rpsRefused("rps under one request an hour", "0.0002", "must be at least 1/3600 (one request an hour), got 0.0002"),
		{
			name:           "per_caller_rps under one request an hour",
			overrideConfig: replace("per_caller_rps      = 50", "per_caller_rps      = 1e-300"),
			expectErr:      "sts.hcl:34: limits: per_caller_rps: must be at least 1/3600 (one request an hour), got 1e-300",
		},
		{
			name:             "unlimited rule",
			overrideConfig:   func(s string) string { return deleteLine("burst = 10")(replace("rps   = 2.5", "unlimited = true")(s)) },
			overrideExpected: func(c *config) { c.Rules[1].RateLimit = &stsid.RateLimit{Unlimited: true} },
		},
		{
			name:           "unlimited with rps",
			overrideConfig: replace("burst = 10", "unlimited = true"),
			expectErr:      "sts.hcl:29: " + db + ": rate_limit: unlimited: takes no rps or burst",
		},
		{
			name:           "unlimited with burst",
			overrideConfig: replace("rps   = 2.5", "unlimited = true"),
			expectErr:      "sts.hcl:28: " + db + ": rate_limit: unlimited: takes no rps or burst",
		},
		{
			name:           "unlimited = false needs rps",
			overrideConfig: func(s string) string { return deleteLine("burst = 10")(replace("rps   = 2.5", "unlimited = false")(s)) },
			expectErr:      "sts.hcl:27: " + db + ": rate_limit: rps: is required",
		},
		{
			name:           "rate_limit without rps",
			overrideConfig: deleteLine("rps   = 2.5"),
			expectErr:      "sts.hcl:27: " + db + ": rate_limit: rps: is required",
		},
		{
			name:           "zero burst",
			overrideConfig: replace("burst = 10", "burst = 0"),
			expectErr:      "sts.hcl:29: " + db + ": rate_limit: burst: must be at least 1, got 0",
		},
		{
			name:           "unknown key in rate_limit",
			overrideConfig: replace("burst = 10", "burst = 10\n    per = \"1m\""),
			expectErr:      `sts.hcl:30: Unsupported argument: An argument named "per" is not expected here.`,
		},
		{
			name:           "negative per_caller_rps",
			overrideConfig: replace("per_caller_rps      = 50", "per_caller_rps      = -5"),
			expectErr:      "sts.hcl:34: limits: per_caller_rps: must be a positive number of requests a second, got -5",
		},
		{
			name:           "per_caller_burst without per_caller_rps",
			overrideConfig: deleteLine("per_caller_rps"),
			expectErr:      "sts.hcl:34: limits: per_caller_burst: applies with a per_caller_rps above 0 only",
		},
		{
			name:           "zero per_caller_burst",
			overrideConfig: replace("per_caller_burst    = 100", "per_caller_burst    = 0"),
			expectErr:      "sts.hcl:35: limits: per_caller_burst: must be at least 1, got 0",
		},
		{
			name:           "zero max_in_flight",
			overrideConfig: replace("max_in_flight       = 256", "max_in_flight       = 0"),
			expectErr:      "sts.hcl:36: limits: max_in_flight: must be at least 1, got 0",
		},
		{
			name:           "bad timeout",
			overrideConfig: replace(`idle_timeout        = "90s"`, `idle_timeout        = "-1s"`),
			expectErr:      `sts.hcl:40: limits: idle_timeout: must be positive, got "-1s"`,
		},
		{
			name:           "header timeout over the read timeout",
			overrideConfig: replace(`read_header_timeout = "5s"`, `read_header_timeout = "1m"`),
			expectErr:      "sts.hcl:37: limits: read_header_timeout: read_header_timeout (1m0s) must not be longer than read_timeout (20s), which covers the headers too",
		},
		{
			name: "read timeout under the default header timeout",
			overrideConfig: func(s string) string {
				return deleteLine("read_header_timeout")(replace(`read_timeout        = "20s"`, `read_timeout        = "5s"`)(s))
			},
			expectErr: "sts.hcl:37: limits: read_timeout: read_header_timeout (10s) must not be longer than read_timeout (5s), which covers the headers too",
		},
		{
			name:           "TLS 1.1",
			overrideConfig: replace(`"1.3"`, `"1.1"`),
			expectErr:      `sts.hcl:41: limits: tls_min_version: must be "1.2" or "1.3", got "1.1"`,
		},
		{
			name:           "unknown key in limits",
			overrideConfig: replace(`  tls_min_version`, "  max_connections = 5\n  tls_min_version"),
			expectErr:      `sts.hcl:41: Unsupported argument: An argument named "max_connections" is not expected here.`,
		},
	})
}
