package spiffeid_test

import (
	"errors"
	"fmt"
	"time"

	stsid "github.com/spiffe-sts/spiffe-sts/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func ExamplePattern_Match() {
	p := stsid.RequirePattern("spiffe://example.org/ns/*/sa/web")
	for _, id := range []string{
		"spiffe://example.org/ns/prod/sa/web",
		"spiffe://example.org/ns/prod/sa/api",
		"spiffe://example.org/ns/prod/extra/sa/web",
		"spiffe://example.com/ns/prod/sa/web",
	} {
		fmt.Println(id, p.Match(spiffeid.RequireFromString(id)))
	}
	// Output:
	// spiffe://example.org/ns/prod/sa/web true
	// spiffe://example.org/ns/prod/sa/api false
	// spiffe://example.org/ns/prod/extra/sa/web false
	// spiffe://example.com/ns/prod/sa/web false
}

func ExampleParsePattern() {
	for _, s := range []string{
		"spiffe://example.org",
		"spiffe://example.org/ns/*/sa/web",
		"spiffe://example.org/ns/prod*",
		"spiffe://example.org/**",
	} {
		p, err := stsid.ParsePattern(s)
		if err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Println("ok", p)
	}
	// Output:
	// ok spiffe://example.org
	// ok spiffe://example.org/ns/*/sa/web
	// spiffeid: pattern "spiffe://example.org/ns/prod*": "*" must be a whole path segment
	// spiffeid: pattern "spiffe://example.org/**": "**" is not supported; "*" matches exactly one segment
}

func ExamplePolicy_RuleFor() {
	policy, err := stsid.NewPolicy([]stsid.Rule{
		{
			// An explicit deny: no audiences.
			Pattern: stsid.RequirePattern("spiffe://example.org/ns/prod/sa/debug"),
			MaxTTL:  time.Minute,
		},
		{
			Pattern:       stsid.RequirePattern("spiffe://example.org/ns/prod/sa/*"),
			Audiences:     []string{"https://api.example.org"},
			Scopes:        []string{"read", "write"},
			DefaultScopes: []string{"read"},
			MaxTTL:        5 * time.Minute,
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}

	caller := spiffeid.RequireFromString("spiffe://example.org/ns/prod/sa/web")
	rule, ok := policy.RuleFor(caller)
	fmt.Println(ok, rule.AllowsAudience("https://api.example.org"), rule.MaxTTL)
	fmt.Println(rule.GrantScopes([]string{"write", "admin", "write"}))
	fmt.Println(rule.GrantScopes(nil))

	rule, _ = policy.RuleFor(spiffeid.RequireFromString("spiffe://example.org/ns/prod/sa/debug"))
	fmt.Println(rule.AllowsAudience("https://api.example.org"))

	_, ok = policy.RuleFor(spiffeid.RequireFromString("spiffe://example.org/ns/test/sa/web"))
	fmt.Println(ok)
	// Output:
	// true true 5m0s
	// [write]
	// [read]
	// false
	// false
}

func ExampleNewPolicy_shadowed() {
	_, err := stsid.NewPolicy([]stsid.Rule{
		{Pattern: stsid.RequirePattern("spiffe://example.org"), MaxTTL: time.Minute},
		{Pattern: stsid.RequirePattern("spiffe://example.org/web"), MaxTTL: time.Minute},
	})
	var shadowed *stsid.ShadowedRuleError
	if errors.As(err, &shadowed) {
		fmt.Println(shadowed.Index, shadowed.By)
	}
	fmt.Println(err)
	// Output:
	// 1 0
	// spiffeid: rule 1 is unreachable: rule 0 matches every ID it matches
}

func ExampleNewPolicy_ruleError() {
	_, err := stsid.NewPolicy([]stsid.Rule{{
		Pattern:       stsid.RequirePattern("spiffe://example.org/web"),
		Scopes:        []string{"read"},
		DefaultScopes: []string{"write"},
		MaxTTL:        time.Minute,
	}})
	var ruleErr *stsid.RuleError
	if errors.As(err, &ruleErr) {
		fmt.Println(ruleErr.Index, ruleErr.Field)
	}
	fmt.Println(err)
	// Output:
	// 0 default_scopes
	// spiffeid: rule 0: default_scopes: default scope "write" is not in scopes
}
