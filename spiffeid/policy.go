package spiffeid

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/spiffe-sts/spiffe-sts/internal/jwtcheck"
)

// Rule is what callers whose SPIFFE ID matches Pattern may obtain.
//
// A rule with no Audiences grants nothing; placed before a broader rule it
// acts as an explicit deny for the IDs it matches.
type Rule struct {
	// Pattern selects the callers the rule applies to. Required.
	Pattern Pattern
	// Audiences are the audiences or resources (RFC 8693 §2.1) the caller
	// may request, compared as exact strings.
	Audiences []string
	// Scopes is the scope ceiling: the granted scope is the requested scope
	// intersected with Scopes. Each entry is an RFC 6749 §3.3 scope-token.
	Scopes []string
	// DefaultScopes are granted when the request names no scope (RFC 6749
	// §3.3 lets the server apply a default). Must be a subset of Scopes.
	DefaultScopes []string
	// MaxTTL caps the lifetime of issued tokens. Must be positive.
	MaxTTL time.Duration
	// Delegation, when set, lets the caller exchange tokens of other
	// subjects (RFC 8693 §1.1); nil means it may obtain tokens only for
	// itself.
	Delegation *Delegation
	// IntrospectAudiences are the audiences, besides the caller's own
	// SPIFFE ID, of the tokens the caller may introspect (RFC 7662 §2.1,
	// §4: a resource server learns only about tokens meant for it),
	// compared as exact strings. They grant no token.
	IntrospectAudiences []string
	// RateLimit, when set, is how fast each caller the rule applies to
	// may send requests (token and introspection requests alike): one
	// token bucket per caller SPIFFE ID, not one for the rule; an
	// Unlimited one exempts them from the server's default limit. Nil
	// leaves the caller to the server's default limit.
	RateLimit *RateLimit
}

// MinRatePerSecond is the lowest RateLimit.PerSecond: one request an
// hour. A slower bucket would ask its callers to wait longer than a
// Retry-After can sensibly say (protocol.MaxRetryAfter).
const MinRatePerSecond = 1.0 / 3600

// RateLimit is a token bucket: PerSecond requests a second on average and
// Burst at once; or, Unlimited, no limit at all.
type RateLimit struct {
	// PerSecond is the refill rate; at least MinRatePerSecond.
	PerSecond float64
	// Burst is the bucket's size; at least 1.
	Burst int
	// Unlimited, set alone, lets the callers of a rule send as fast as
	// they like, whatever the server's default (a high-volume gateway,
	// say); the in-flight cap still applies.
	Unlimited bool
}

// Check reports why l is not a usable limit, or nil.
func (l RateLimit) Check() error {
	switch {
	case l.Unlimited && (l.PerSecond != 0 || l.Burst != 0):
		return errors.New("an unlimited rate limit takes no rate or burst")
	case l.Unlimited:
		return nil
	case !(l.PerSecond > 0) || math.IsInf(l.PerSecond, 0):
		return fmt.Errorf("rate must be a positive number of requests a second, got %v", l.PerSecond)
	case l.PerSecond < MinRatePerSecond:
		return fmt.Errorf("rate must be at least one request an hour (1/3600 a second), got %v", l.PerSecond)
	case l.Burst < 1:
		return fmt.Errorf("burst must be at least 1, got %d", l.Burst)
	}
	return nil
}

// Delegation is what a caller may do on behalf of others.
type Delegation struct {
	// Subjects are the SPIFFE IDs the caller may act for.
	Subjects []Pattern
	// Issuers name the configured external issuers whose subjects (end
	// users, for example) the caller may act for.
	Issuers []string
	// MaxDepth caps the number of actors in the act chain of an issued
	// token (RFC 8693 §4.1), the caller included. Must be positive.
	MaxDepth int
	// Impersonation lets the caller obtain tokens for those subjects
	// without an act claim, when it asks for impersonation.
	Impersonation bool
}

// MayActFor reports whether the rule lets its caller act for the SPIFFE ID
// subject.
func (r *Rule) MayActFor(subject spiffeid.ID) bool {
	if r.Delegation == nil {
		return false
	}
	for _, p := range r.Delegation.Subjects {
		if p.Match(subject) {
			return true
		}
	}
	return false
}

// MayActForIssuer reports whether the rule lets its caller act for
// subjects of the external issuer named issuer.
func (r *Rule) MayActForIssuer(issuer string) bool {
	return r.Delegation != nil && slices.Contains(r.Delegation.Issuers, issuer)
}

// Policy maps caller SPIFFE IDs to rules. It is immutable after [NewPolicy]
// and safe for concurrent use.
type Policy struct {
	rules []Rule
}

// RuleError reports an invalid field of the rule at Index (0-based) in the
// slice given to [NewPolicy].
type RuleError struct {
	// Index is the position of the rule in the slice given to NewPolicy.
	Index int
	// Field is "pattern", "audiences", "scopes", "default_scopes",
	// "max_ttl", "delegation", "introspect_audiences" or "rate_limit".
	Field string
	// Err describes the problem.
	Err error
}

// Error implements error.
func (e *RuleError) Error() string {
	return fmt.Sprintf("spiffeid: rule %d: %s: %v", e.Index, e.Field, e.Err)
}

// Unwrap returns e.Err.
func (e *RuleError) Unwrap() error {
	return e.Err
}

// ShadowedRuleError reports that the rule at Index can never apply because
// the earlier rule at By matches every ID it matches (see [Pattern.Covers]).
type ShadowedRuleError struct {
	// Index is the position of the unreachable rule.
	Index int
	// By is the position of the earlier rule that shadows it.
	By int
}

// Error implements error.
func (e *ShadowedRuleError) Error() string {
	return fmt.Sprintf("spiffeid: rule %d is unreachable: rule %d matches every ID it matches", e.Index, e.By)
}

// NewPolicy validates rules and returns a Policy that evaluates them in
// order: the first rule whose Pattern matches the caller applies, like
// firewall rules, and a caller no rule matches is denied. NewPolicy copies
// rules. It returns a [*RuleError] for an invalid rule and a
// [*ShadowedRuleError] for a rule that an earlier rule makes unreachable.
func NewPolicy(rules []Rule) (*Policy, error) {
	p := &Policy{rules: make([]Rule, len(rules))}
	for i, r := range rules {
		if err := validateRule(i, &r); err != nil {
			return nil, err
		}
		for j := range i {
			if rules[j].Pattern.Covers(r.Pattern) {
				return nil, &ShadowedRuleError{Index: i, By: j}
			}
		}
		p.rules[i] = Rule{
			Pattern:       r.Pattern,
			Audiences:     slices.Clone(r.Audiences),
			Scopes:        slices.Clone(r.Scopes),
			DefaultScopes: slices.Clone(r.DefaultScopes),
			MaxTTL:        r.MaxTTL,
		}
		if r.RateLimit != nil {
			l := *r.RateLimit
			p.rules[i].RateLimit = &l
		}
		if r.IntrospectAudiences != nil {
			p.rules[i].IntrospectAudiences = slices.Clone(r.IntrospectAudiences)
		}
		if d := r.Delegation; d != nil {
			p.rules[i].Delegation = &Delegation{
				Subjects: slices.Clone(d.Subjects), Issuers: slices.Clone(d.Issuers),
				MaxDepth: d.MaxDepth, Impersonation: d.Impersonation,
			}
		}
	}
	return p, nil
}

func validateRule(i int, r *Rule) error {
	fail := func(field string, err error) error {
		return &RuleError{Index: i, Field: field, Err: err}
	}
	if r.Pattern.IsZero() {
		return fail("pattern", errors.New("pattern is required"))
	}
	for k, aud := range r.Audiences {
		switch {
		case aud == "":
			return fail("audiences", errors.New("empty audience"))
		case slices.Contains(r.Audiences[:k], aud):
			return fail("audiences", fmt.Errorf("duplicate audience %q", aud))
		}
	}
	for k, aud := range r.IntrospectAudiences {
		switch {
		case aud == "":
			return fail("introspect_audiences", errors.New("empty audience"))
		case slices.Contains(r.IntrospectAudiences[:k], aud):
			return fail("introspect_audiences", fmt.Errorf("duplicate audience %q", aud))
		}
	}
	for k, scope := range r.Scopes {
		if err := jwtcheck.CheckScopeToken(scope); err != nil {
			return fail("scopes", err)
		}
		if slices.Contains(r.Scopes[:k], scope) {
			return fail("scopes", fmt.Errorf("duplicate scope %q", scope))
		}
	}
	for k, scope := range r.DefaultScopes {
		switch {
		case !slices.Contains(r.Scopes, scope):
			return fail("default_scopes", fmt.Errorf("default scope %q is not in scopes", scope))
		case slices.Contains(r.DefaultScopes[:k], scope):
			return fail("default_scopes", fmt.Errorf("duplicate scope %q", scope))
		}
	}
	if r.MaxTTL <= 0 {
		return fail("max_ttl", fmt.Errorf("must be positive, got %v", r.MaxTTL))
	}
	if r.RateLimit != nil {
		if err := r.RateLimit.Check(); err != nil {
			return fail("rate_limit", err)
		}
	}
	if d := r.Delegation; d != nil {
		switch {
		case len(d.Subjects) == 0 && len(d.Issuers) == 0:
			return fail("delegation", errors.New("names no subjects and no issuers"))
		case d.MaxDepth <= 0:
			return fail("delegation", fmt.Errorf("max_depth must be positive, got %d", d.MaxDepth))
		case slices.ContainsFunc(d.Subjects, Pattern.IsZero):
			return fail("delegation", errors.New("empty subject pattern"))
		case slices.Contains(d.Issuers, ""):
			return fail("delegation", errors.New("empty issuer name"))
		}
	}
	return nil
}

// RuleFor returns the first rule whose Pattern matches id, or (nil, false)
// when no rule does and the caller is denied. The returned Rule belongs to p
// and must not be modified. RuleFor does not allocate.
func (p *Policy) RuleFor(id spiffeid.ID) (*Rule, bool) {
	for i := range p.rules {
		if p.rules[i].Pattern.Match(id) {
			return &p.rules[i], true
		}
	}
	return nil, false
}

// AllowsAudience reports whether aud is one of r.Audiences.
func (r *Rule) AllowsAudience(aud string) bool {
	return slices.Contains(r.Audiences, aud)
}

// MayIntrospect reports whether the rule lets its caller introspect a
// token for audience aud: aud is one of r.IntrospectAudiences. A caller
// may always introspect tokens for its own SPIFFE ID, rule or not.
func (r *Rule) MayIntrospect(aud string) bool {
	return slices.Contains(r.IntrospectAudiences, aud)
}

// GrantScopes returns the scopes to grant for a request (RFC 6749 §3.3): the
// requested scopes that are in r.Scopes, in request order and without
// duplicates. When requested is empty it returns r.DefaultScopes. The
// result is a new slice; it is empty when nothing can be granted.
func (r *Rule) GrantScopes(requested []string) []string {
	if len(requested) == 0 {
		return slices.Clone(r.DefaultScopes)
	}
	var granted []string
	for _, s := range requested {
		if slices.Contains(r.Scopes, s) && !slices.Contains(granted, s) {
			granted = append(granted, s)
		}
	}
	return granted
}
