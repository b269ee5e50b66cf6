package main

import (
	"testing"

	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
)

// FuzzParseConfig feeds arbitrary bytes to the server's configuration
// parser. It must never panic and must either refuse with an error or
// return a configuration whose required values are set and valid.
func FuzzParseConfig(f *testing.F) {
	f.Setenv(endpointSocketEnv, "")
	for _, s := range []string{
		baselineConfig, minimalConfig, externalConfig, ringConfig,
		minimalConfig + `audit { path = "-" max_size = "1MiB" max_files = 2 required = true }`,
		minimalConfig + `policy "spiffe://example.org/*" { audiences = ["a"] delegation { max_depth = 0 } }`,
		minimalConfig + `policy "spiffe://example.org/a" { audiences = ["a"] }` + "\n" + `policy "spiffe://example.org/a" { audiences = ["b"] }`,
		`server { trust_domain = "x" } server {}`, `server "label" {}`, `policy {}`, `issuer { default_ttl = "-1s" }`,
		"server {\n  bind_address = \"\xff\"\n", `${}`, `a = b.c[0]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		cfg, err := parseConfig("fuzz.hcl", src)
		if err != nil {
			if cfg != nil || err.Error() == "" {
				t.Fatalf("error %q with configuration %+v", err, cfg)
			}
			return
		}
		s := cfg.Server
		if s.TrustDomain.IsZero() || s.DataDir == "" || s.WorkloadAPIAddr == "" ||
			protocol.CheckIssuerURL(s.IssuerURL) != nil || checkHostPort(s.BindAddress) != nil {
			t.Fatalf("accepted an invalid server block: %+v", s)
		}
		if cfg.Issuer.Algorithm.String() == "" || cfg.Issuer.DefaultTTL <= 0 || cfg.Policy == nil || cfg.maxTokenTTL() <= 0 {
			t.Fatalf("accepted an invalid configuration: %+v", cfg)
		}
		for _, r := range cfg.Rules {
			if r.Pattern.IsZero() || r.MaxTTL <= 0 || (len(r.Audiences) == 0 && len(r.IntrospectAudiences) == 0) {
				t.Fatalf("accepted an invalid rule: %+v", r)
			}
		}
	})
}
