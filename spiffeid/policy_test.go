package spiffeid

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// baselineRules is a valid policy; each TestNewPolicy case changes one thing.
func baselineRules() []Rule {
	return []Rule{
		{
			Pattern:       RequirePattern("spiffe://example.org/ns/prod/sa/web"),
			Audiences:     []string{"https://api.example.org"},
			Scopes:        []string{"read", "write"},
			DefaultScopes: []string{"read"},
			MaxTTL:        5 * time.Minute,
		},
		{
			Pattern:   RequirePattern("spiffe://example.org/ns/*/sa/web"),
			Audiences: []string{"https://api.example.org", "https://other.example.org"},
			Scopes:    []string{"read"},
			MaxTTL:    time.Minute,
		},
	}
}

func TestNewPolicy(t *testing.T) {
	for _, tt := range []struct {
		name           string
		overrideRules  func(rules []Rule) []Rule
		expectErr      string
		expectRuleErr  *RuleError // Err compared by text
		expectShadowed *ShadowedRuleError
	}{
		{name: "baseline"},
		{
			name:          "no rules",
			overrideRules: func([]Rule) []Rule { return nil },
		},
		{
			name:          "no audiences is allowed",
			overrideRules: func(r []Rule) []Rule { r[0].Audiences = nil; return r },
		},
		{
			name:          "no scopes is allowed",
			overrideRules: func(r []Rule) []Rule { r[0].Scopes, r[0].DefaultScopes = nil, nil; return r },
		},
		{
			name:          "zero pattern",
			overrideRules: func(r []Rule) []Rule { r[1].Pattern = Pattern{}; return r },
			expectErr:     "spiffeid: rule 1: pattern: pattern is required",
			expectRuleErr: &RuleError{Index: 1, Field: "pattern"},
		},
		{
			name:          "empty audience",
			overrideRules: func(r []Rule) []Rule { r[1].Audiences[1] = ""; return r },
			expectErr:     "spiffeid: rule 1: audiences: empty audience",
			expectRuleErr: &RuleError{Index: 1, Field: "audiences"},
		},
		{
			name:          "duplicate audience",
			overrideRules: func(r []Rule) []Rule { r[1].Audiences[1] = r[1].Audiences[0]; return r },
			expectErr:     `spiffeid: rule 1: audiences: duplicate audience "https://api.example.org"`,
			expectRuleErr: &RuleError{Index: 1, Field: "audiences"},
		},
		{
			name:          "empty scope",
			overrideRules: func(r []Rule) []Rule { r[0].Scopes[1] = ""; return r },
			expectErr:     "spiffeid: rule 0: scopes: empty scope",
			expectRuleErr: &RuleError{Index: 0, Field: "scopes"},
		},
		{
			name:          "whitespace scope",
			overrideRules: func(r []Rule) []Rule { r[0].Scopes[1] = " \t"; return r },
			expectErr:     "spiffeid: rule 0: scopes: empty scope",
			expectRuleErr: &RuleError{Index: 0, Field: "scopes"},
		},
		{
			name:          "scope with space",
			overrideRules: func(r []Rule) []Rule { r[0].Scopes[1] = "read write"; return r },
			expectErr:     `spiffeid: rule 0: scopes: scope "read write" contains ' ', which RFC 6749 §3.3 does not allow`,
			expectRuleErr: &RuleError{Index: 0, Field: "scopes"},
		},
		{
			name:          "scope with double quote",
			overrideRules: func(r []Rule) []Rule { r[0].Scopes[1] = `wr"te`; return r },
			expectErr:     `spiffeid: rule 0: scopes: scope "wr\"te" contains '"', which RFC 6749 §3.3 does not allow`,
			expectRuleErr: &RuleError{Index: 0, Field: "scopes"},
		},
		{
			name:          "scope with backslash",
			overrideRules: func(r []Rule) []Rule { r[0].Scopes[1] = `wr\te`; return r },
			expectErr:     `spiffeid: rule 0: scopes: scope "wr\\te" contains '\\', which RFC 6749 §3.3 does not allow`,
			expectRuleErr: &RuleError{Index: 0, Field: "scopes"},
		},
		{
			name:          "scope with non-ASCII",
			overrideRules: func(r []Rule) []Rule { r[0].Scopes[1] = "wrïte"; return r },
			expectErr:     `spiffeid: rule 0: scopes: scope "wrïte" contains 'ï', which RFC 6749 §3.3 does not allow`,
			expectRuleErr: &RuleError{Index: 0, Field: "scopes"},
		},
		{
			name:          "scope with all allowed punctuation",
			overrideRules: func(r []Rule) []Rule { r[0].Scopes[1] = "!#$%&'()*+,-./:;<=>?@[]^_`{|}~"; return r },
		},
		{
			name:          "duplicate scope",
			overrideRules: func(r []Rule) []Rule { r[0].Scopes[1] = "read"; return r },
			expectErr:     `spiffeid: rule 0: scopes: duplicate scope "read"`,
			expectRuleErr: &RuleError{Index: 0, Field: "scopes"},
		},
		{
			name:          "default scope not in scopes",
			overrideRules: func(r []Rule) []Rule { r[0].DefaultScopes = []string{"admin"}; return r },
			expectErr:     `spiffeid: rule 0: default_scopes: default scope "admin" is not in scopes`,
			expectRuleErr: &RuleError{Index: 0, Field: "default_scopes"},
		},
		{
			name:          "duplicate default scope",
			overrideRules: func(r []Rule) []Rule { r[0].DefaultScopes = []string{"read", "read"}; return r },
			expectErr:     `spiffeid: rule 0: default_scopes: duplicate scope "read"`,
			expectRuleErr: &RuleError{Index: 0, Field: "default_scopes"},
		},
		{
			name:          "zero max TTL",
			overrideRules: func(r []Rule) []Rule { r[1].MaxTTL = 0; return r },
			expectErr:     "spiffeid: rule 1: max_ttl: must be positive, got 0s",
			expectRuleErr: &RuleError{Index: 1, Field: "max_ttl"},
		},
		{
			name:          "negative max TTL",
			overrideRules: func(r []Rule) []Rule { r[1].MaxTTL = -time.Second; return r },
			expectErr:     "spiffeid: rule 1: max_ttl: must be positive, got -1s",
			expectRuleErr: &RuleError{Index: 1, Field: "max_ttl"},
		},
		{
			name:          "rate limit",
			overrideRules: func(r []Rule) []Rule { r[0].RateLimit = &RateLimit{PerSecond: 0.5, Burst: 1}; return r },
		},
		{
			name:          "zero rate",
			overrideRules: func(r []Rule) []Rule { r[1].RateLimit = &RateLimit{Burst: 1}; return r },
			expectErr:     "spiffeid: rule 1: rate_limit: rate must be a positive number of requests a second, got 0",
			expectRuleErr: &RuleError{Index: 1, Field: "rate_limit"},
		},
		{
			name:          "unlimited",
			overrideRules: func(r []Rule) []Rule { r[0].RateLimit = &RateLimit{Unlimited: true}; return r },
		},
		{
			name:          "unlimited with a rate",
			overrideRules: func(r []Rule) []Rule { r[1].RateLimit = &RateLimit{Unlimited: true, PerSecond: 1, Burst: 1}; return r },
			expectErr:     "spiffeid: rule 1: rate_limit: an unlimited rate limit takes no rate or burst",
			expectRuleErr: &RuleError{Index: 1, Field: "rate_limit"},
		},
		{
			name:          "one request an hour",
			overrideRules: func(r []Rule) []Rule { r[0].RateLimit = &RateLimit{PerSecond: MinRatePerSecond, Burst: 1}; return r },
		},
		{
			name:          "rate under one request an hour",
			overrideRules: func(r []Rule) []Rule { r[1].RateLimit = &RateLimit{PerSecond: 1e-300, Burst: 1}; return r },
			expectErr:     "spiffeid: rule 1: rate_limit: rate must be at least one request an hour (1/3600 a second), got 1e-300",
			expectRuleErr: &RuleError{Index: 1, Field: "rate_limit"},
		},
		{
			name:          "zero burst",
			overrideRules: func(r []Rule) []Rule { r[1].RateLimit = &RateLimit{PerSecond: 10}; return r },
			expectErr:     "spiffeid: rule 1: rate_limit: burst must be at least 1, got 0",
			expectRuleErr: &RuleError{Index: 1, Field: "rate_limit"},
		},
		{
			name:           "wildcard shadows exact",
			overrideRules:  func(r []Rule) []Rule { return []Rule{r[1], r[0]} },
			expectErr:      "spiffeid: rule 1 is unreachable: rule 0 matches every ID it matches",
			expectShadowed: &ShadowedRuleError{Index: 1, By: 0},
		},
		{
			name: "trust domain shadows later rule",
			overrideRules: func(r []Rule) []Rule {
				td := r[0]
				td.Pattern = RequirePattern("spiffe://example.org")
				return []Rule{td, r[0], r[1]}
			},
			expectErr:      "spiffeid: rule 1 is unreachable: rule 0 matches every ID it matches",
			expectShadowed: &ShadowedRuleError{Index: 1, By: 0},
		},
		{
			name:           "duplicate pattern",
			overrideRules:  func(r []Rule) []Rule { return append(r, r[1]) },
			expectErr:      "spiffeid: rule 2 is unreachable: rule 1 matches every ID it matches",
			expectShadowed: &ShadowedRuleError{Index: 2, By: 1},
		},
		{
			name: "trust domain rule last is reachable",
			overrideRules: func(r []Rule) []Rule {
				td := r[1]
				td.Pattern = RequirePattern("spiffe://example.org")
				return append(r, td)
			},
		},
		{
			name: "other trust domain is not shadowed",
			overrideRules: func(r []Rule) []Rule {
				other := r[0]
				other.Pattern = RequirePattern("spiffe://example.com/ns/prod/sa/web")
				return []Rule{r[1], other}
			},
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rules := baselineRules()
			if tt.overrideRules != nil {
				rules = tt.overrideRules(rules)
			}
			p, err := NewPolicy(rules)
			if tt.expectErr == "" {
				if err != nil {
					t.Fatalf("NewPolicy: %v", err)
				}
				if p == nil {
					t.Fatal("NewPolicy returned nil Policy")
				}
				return
			}
			if err == nil || err.Error() != tt.expectErr {
				t.Fatalf("NewPolicy error = %v, want %q", err, tt.expectErr)
			}
			if p != nil {
				t.Errorf("NewPolicy returned a Policy with an error")
			}
			if tt.expectRuleErr != nil {
				var re *RuleError
				if !errors.As(err, &re) {
					t.Fatalf("error %T is not a *RuleError", err)
				}
				if re.Index != tt.expectRuleErr.Index || re.Field != tt.expectRuleErr.Field || re.Err == nil || !errors.Is(err, re.Err) {
					t.Errorf("RuleError = %+v, want Index %d Field %q and an unwrappable Err", re, tt.expectRuleErr.Index, tt.expectRuleErr.Field)
				}
			}
			if tt.expectShadowed != nil {
				var se *ShadowedRuleError
				if !errors.As(err, &se) {
					t.Fatalf("error %T is not a *ShadowedRuleError", err)
				}
				if *se != *tt.expectShadowed {
					t.Errorf("ShadowedRuleError = %+v, want %+v", *se, *tt.expectShadowed)
				}
			}
		})
	}
}

func TestPolicyRuleFor(t *testing.T) {
	rules := []Rule{
		{Pattern: RequirePattern("spiffe://example.org/ns/prod/sa/web"), Audiences: []string{"exact"}, MaxTTL: time.Minute},
		{Pattern: RequirePattern("spiffe://example.org/ns/*/sa/web"), Audiences: []string{"wildcard"}, MaxTTL: time.Minute},
		{Pattern: RequirePattern("spiffe://example.org/ns/test/sa/*"), Audiences: []string{"test"}, MaxTTL: time.Minute},
		{Pattern: RequirePattern("spiffe://example.org"), Audiences: []string{"td"}, MaxTTL: time.Minute},
	}
	p, err := NewPolicy(rules)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		id       string
		expected string // first audience of the rule that applies, "" for deny
	}{
		{id: "spiffe://example.org/ns/prod/sa/web", expected: "exact"},
		// Matches rules 1 and 2; the earlier one applies.
		{id: "spiffe://example.org/ns/test/sa/web", expected: "wildcard"},
		{id: "spiffe://example.org/ns/test/sa/api", expected: "test"},
		{id: "spiffe://example.org/other", expected: "td"},
		{id: "spiffe://example.org", expected: "td"},
		{id: "spiffe://example.com/ns/prod/sa/web", expected: ""},
		{id: "spiffe://evil.example.org/ns/prod/sa/web", expected: ""},
	} {
		t.Run(tt.id, func(t *testing.T) {
			r, ok := p.RuleFor(spiffeid.RequireFromString(tt.id))
			if tt.expected == "" {
				if ok || r != nil {
					t.Fatalf("RuleFor(%q) = %+v, %v; want deny", tt.id, r, ok)
				}
				return
			}
			if !ok || r == nil {
				t.Fatalf("RuleFor(%q) denied, want rule %q", tt.id, tt.expected)
			}
			if r.Audiences[0] != tt.expected {
				t.Errorf("RuleFor(%q) = rule %q, want rule %q", tt.id, r.Audiences[0], tt.expected)
			}
		})
	}

	t.Run("zero ID", func(t *testing.T) {
		if r, ok := p.RuleFor(spiffeid.ID{}); ok {
			t.Errorf("RuleFor(zero) = %+v, want deny", r)
		}
	})
	t.Run("empty policy denies", func(t *testing.T) {
		empty, err := NewPolicy(nil)
		if err != nil {
			t.Fatal(err)
		}
		if r, ok := empty.RuleFor(spiffeid.RequireFromString("spiffe://example.org/web")); ok {
			t.Errorf("RuleFor = %+v, want deny", r)
		}
	})
	t.Run("policy copies rules", func(t *testing.T) {
		rules[0].Audiences[0] = "mutated"
		rules[0].Pattern = RequirePattern("spiffe://example.com")
		r, ok := p.RuleFor(spiffeid.RequireFromString("spiffe://example.org/ns/prod/sa/web"))
		if !ok || r.Audiences[0] != "exact" {
			t.Errorf("policy changed after caller mutated rules: %+v", r)
		}
	})
}

func TestRuleAllowsAudience(t *testing.T) {
	r := baselineRules()[1]
	for _, tt := range []struct {
		aud      string
		expected bool
	}{
		{aud: "https://api.example.org", expected: true},
		{aud: "https://other.example.org", expected: true},
		{aud: "https://api.example.org/"},
		{aud: "HTTPS://api.example.org"},
		{aud: ""},
	} {
		if got := r.AllowsAudience(tt.aud); got != tt.expected {
			t.Errorf("AllowsAudience(%q) = %v, want %v", tt.aud, got, tt.expected)
		}
	}
}

func TestRuleGrantScopes(t *testing.T) {
	for _, tt := range []struct {
		name         string
		overrideRule func(r *Rule)
		requested    []string
		expected     []string
	}{
		{name: "baseline", requested: []string{"read", "write"}, expected: []string{"read", "write"}},
		{name: "request order kept", requested: []string{"write", "read"}, expected: []string{"write", "read"}},
		{name: "intersection", requested: []string{"admin", "write"}, expected: []string{"write"}},
		{name: "duplicates dropped", requested: []string{"write", "read", "write", "read"}, expected: []string{"write", "read"}},
		{name: "nothing grantable", requested: []string{"admin"}, expected: nil},
		{name: "empty request gets defaults", requested: nil, expected: []string{"read"}},
		{name: "empty non-nil request gets defaults", requested: []string{}, expected: []string{"read"}},
		{
			name:         "no defaults",
			overrideRule: func(r *Rule) { r.DefaultScopes = nil },
			requested:    nil,
			expected:     nil,
		},
		{
			name:         "no scope ceiling",
			overrideRule: func(r *Rule) { r.Scopes, r.DefaultScopes = nil, nil },
			requested:    []string{"read"},
			expected:     nil,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rules := baselineRules()
			if tt.overrideRule != nil {
				tt.overrideRule(&rules[0])
			}
			p, err := NewPolicy(rules)
			if err != nil {
				t.Fatal(err)
			}
			r, ok := p.RuleFor(spiffeid.RequireFromString("spiffe://example.org/ns/prod/sa/web"))
			if !ok {
				t.Fatal("RuleFor denied")
			}
			got := r.GrantScopes(tt.requested)
			if !slices.Equal(got, tt.expected) {
				t.Errorf("GrantScopes(%q) = %q, want %q", tt.requested, got, tt.expected)
			}
			// The result is the caller's to modify.
			if len(got) > 0 {
				got[0] = "mutated"
				if again := r.GrantScopes(tt.requested); !slices.Equal(again, tt.expected) {
					t.Errorf("GrantScopes result aliases the rule: %q", again)
				}
			}
		})
	}
}

func TestRuleForAllocs(t *testing.T) {
	p, ids := benchPolicy(t)
	allocs := testing.AllocsPerRun(100, func() {
		for _, id := range ids {
			p.RuleFor(id)
		}
	})
	if allocs != 0 {
		t.Errorf("RuleFor allocates %v times per run, want 0", allocs)
	}
}

func BenchmarkRuleFor(b *testing.B) {
	p, ids := benchPolicy(b)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		p.RuleFor(ids[i%len(ids)])
		i++
	}
}

// benchPolicy returns a policy with 20 rules and IDs that hit early, late and
// no rules.
func benchPolicy(tb testing.TB) (*Policy, []spiffeid.ID) {
	tb.Helper()
	var rules []Rule
	for i := range 18 {
		rules = append(rules, Rule{
			Pattern:   RequirePattern(fmt.Sprintf("spiffe://example.org/ns/team%d/sa/*", i)),
			Audiences: []string{"https://api.example.org"},
			Scopes:    []string{"read", "write"},
			MaxTTL:    time.Minute,
		})
	}
	rules = append(rules,
		Rule{Pattern: RequirePattern("spiffe://example.org/ns/*/sa/web"), MaxTTL: time.Minute},
		Rule{Pattern: RequirePattern("spiffe://partner.example"), MaxTTL: time.Minute},
	)
	p, err := NewPolicy(rules)
	if err != nil {
		tb.Fatal(err)
	}
	ids := []spiffeid.ID{
		spiffeid.RequireFromString("spiffe://example.org/ns/team0/sa/api"),
		spiffeid.RequireFromString("spiffe://example.org/ns/team17/sa/api"),
		spiffeid.RequireFromString("spiffe://example.org/ns/other/sa/web"),
		spiffeid.RequireFromString("spiffe://partner.example/billing"),
		spiffeid.RequireFromString("spiffe://example.org/ns/other/sa/api/extra"),
		spiffeid.RequireFromString("spiffe://unknown.example/web"),
	}
	return p, ids
}

func TestPolicyCopiesRateLimit(t *testing.T) {
	limit := &RateLimit{PerSecond: 5, Burst: 10}
	p, err := NewPolicy([]Rule{{Pattern: RequirePattern("spiffe://example.org/web"), Audiences: []string{"a"}, MaxTTL: time.Minute, RateLimit: limit}})
	if err != nil {
		t.Fatal(err)
	}
	limit.PerSecond = 1000
	r, _ := p.RuleFor(spiffeid.RequireFromString("spiffe://example.org/web"))
	if r.RateLimit == nil || *r.RateLimit != (RateLimit{PerSecond: 5, Burst: 10}) {
		t.Fatalf("RateLimit = %+v after the caller changed its copy, want {5 10}", r.RateLimit)
	}
}
