package spiffeid

import (
	"encoding/json"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Each case changes one thing in the baseline "spiffe://example.org/ns/*/sa/web".
func TestParsePattern(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	for _, tt := range []struct {
		name      string
		in        string
		expectErr string
		expected  Pattern
	}{
		{name: "baseline", in: "spiffe://example.org/ns/*/sa/web", expected: Pattern{td: td, path: "/ns/*/sa/web", text: "spiffe://example.org/ns/*/sa/web"}},
		{name: "exact ID", in: "spiffe://example.org/ns/prod/sa/web", expected: Pattern{td: td, path: "/ns/prod/sa/web", text: "spiffe://example.org/ns/prod/sa/web"}},
		{name: "trust domain wide", in: "spiffe://example.org", expected: Pattern{td: td, text: "spiffe://example.org"}},
		{name: "leading wildcard", in: "spiffe://example.org/*/prod/sa/web", expected: Pattern{td: td, path: "/*/prod/sa/web", text: "spiffe://example.org/*/prod/sa/web"}},
		{name: "trailing wildcard", in: "spiffe://example.org/ns/*/sa/*", expected: Pattern{td: td, path: "/ns/*/sa/*", text: "spiffe://example.org/ns/*/sa/*"}},
		{name: "only wildcard", in: "spiffe://example.org/*", expected: Pattern{td: td, path: "/*", text: "spiffe://example.org/*"}},
		{name: "empty", in: "", expectErr: `spiffeid: pattern is empty`},
		{name: "no scheme", in: "example.org/ns/*/sa/web", expectErr: `spiffeid: pattern "example.org/ns/*/sa/web": scheme must be "spiffe"`},
		{name: "wrong scheme", in: "https://example.org/ns/*/sa/web", expectErr: `spiffeid: pattern "https://example.org/ns/*/sa/web": scheme must be "spiffe"`},
		{name: "wildcard trust domain", in: "spiffe://*.example.org/ns/*/sa/web", expectErr: `spiffeid: pattern "spiffe://*.example.org/ns/*/sa/web": trust domain cannot contain "*"`},
		{name: "whole wildcard trust domain", in: "spiffe://*/ns/*/sa/web", expectErr: `spiffeid: pattern "spiffe://*/ns/*/sa/web": trust domain cannot contain "*"`},
		{name: "double wildcard", in: "spiffe://example.org/ns/**/sa/web", expectErr: `spiffeid: pattern "spiffe://example.org/ns/**/sa/web": "**" is not supported; "*" matches exactly one segment`},
		{name: "wildcard inside segment", in: "spiffe://example.org/ns/*/sa/we*", expectErr: `spiffeid: pattern "spiffe://example.org/ns/*/sa/we*": "*" must be a whole path segment`},
		{name: "wildcard prefix segment", in: "spiffe://example.org/ns/*/sa/*web", expectErr: `spiffeid: pattern "spiffe://example.org/ns/*/sa/*web": "*" must be a whole path segment`},
		{name: "trailing slash", in: "spiffe://example.org/ns/*/sa/web/", expectErr: `spiffeid: pattern "spiffe://example.org/ns/*/sa/web/": path cannot have a trailing slash`},
		{name: "trust domain trailing slash", in: "spiffe://example.org/", expectErr: `spiffeid: pattern "spiffe://example.org/": path cannot have a trailing slash`},
		{name: "empty segment", in: "spiffe://example.org/ns//sa/web", expectErr: `spiffeid: pattern "spiffe://example.org/ns//sa/web": path cannot contain empty segments`},
		{name: "dot segment", in: "spiffe://example.org/ns/*/sa/..", expectErr: `spiffeid: pattern "spiffe://example.org/ns/*/sa/..": path cannot contain dot segments`},
		{name: "bad path char", in: "spiffe://example.org/ns/*/sa/w%20b", expectErr: `spiffeid: pattern "spiffe://example.org/ns/*/sa/w%20b": path segment characters are limited to letters, numbers, dots, dashes, and underscores`},
		{name: "uppercase trust domain", in: "spiffe://Example.org/ns/*/sa/web", expectErr: `spiffeid: pattern "spiffe://Example.org/ns/*/sa/web": trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores`},
		{name: "missing trust domain", in: "spiffe:///ns/*/sa/web", expectErr: `spiffeid: pattern "spiffe:///ns/*/sa/web": trust domain is missing`},
		{name: "query", in: "spiffe://example.org/ns/*/sa/web?x=1", expectErr: `spiffeid: pattern "spiffe://example.org/ns/*/sa/web?x=1": path segment characters are limited to letters, numbers, dots, dashes, and underscores`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePattern(tt.in)
			if tt.expectErr != "" {
				if err == nil || err.Error() != tt.expectErr {
					t.Fatalf("ParsePattern(%q) error = %v, want %q", tt.in, err, tt.expectErr)
				}
				if !got.IsZero() {
					t.Errorf("ParsePattern(%q) = %v on error, want zero", tt.in, got)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParsePattern(%q): %v", tt.in, err)
			}
			if got != tt.expected {
				t.Errorf("ParsePattern(%q) = %#v, want %#v", tt.in, got, tt.expected)
			}
			if got.String() != tt.in {
				t.Errorf("String() = %q, want %q", got.String(), tt.in)
			}
			if got.TrustDomain() != td {
				t.Errorf("TrustDomain() = %v, want %v", got.TrustDomain(), td)
			}
		})
	}
}

func TestRequirePatternPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("RequirePattern did not panic on an invalid pattern")
		}
	}()
	RequirePattern("spiffe://example.org/**")
}

func TestPatternMatch(t *testing.T) {
	for _, tt := range []struct {
		name     string
		pattern  string // "" for the zero Pattern
		id       string
		expected bool
	}{
		{name: "exact", pattern: "spiffe://example.org/ns/prod/sa/web", id: "spiffe://example.org/ns/prod/sa/web", expected: true},
		{name: "exact other path", pattern: "spiffe://example.org/ns/prod/sa/web", id: "spiffe://example.org/ns/prod/sa/api"},
		{name: "exact is not a prefix", pattern: "spiffe://example.org/ns/prod", id: "spiffe://example.org/ns/prod/sa/web"},
		{name: "exact segment prefix", pattern: "spiffe://example.org/ns/prod/sa/web", id: "spiffe://example.org/ns/prod/sa/webx"},
		{name: "exact other trust domain", pattern: "spiffe://example.org/ns/prod/sa/web", id: "spiffe://example.com/ns/prod/sa/web"},
		{name: "trust domain wide", pattern: "spiffe://example.org", id: "spiffe://example.org/ns/prod/sa/web", expected: true},
		{name: "trust domain wide matches trust domain ID", pattern: "spiffe://example.org", id: "spiffe://example.org", expected: true},
		{name: "trust domain wide other trust domain", pattern: "spiffe://example.org", id: "spiffe://example.com/ns/prod/sa/web"},
		{name: "trust domain wide subdomain", pattern: "spiffe://example.org", id: "spiffe://sub.example.org/web"},
		{name: "path pattern does not match trust domain ID", pattern: "spiffe://example.org/ns/*/sa/web", id: "spiffe://example.org"},
		{name: "wildcard", pattern: "spiffe://example.org/ns/*/sa/web", id: "spiffe://example.org/ns/prod/sa/web", expected: true},
		{name: "wildcard other literal", pattern: "spiffe://example.org/ns/*/sa/web", id: "spiffe://example.org/ns/prod/sa/api"},
		{name: "wildcard too few segments", pattern: "spiffe://example.org/ns/*/sa/web", id: "spiffe://example.org/ns/sa/web"},
		{name: "wildcard too many segments", pattern: "spiffe://example.org/ns/*/sa/web", id: "spiffe://example.org/ns/a/b/sa/web"},
		{name: "wildcard extra trailing segment", pattern: "spiffe://example.org/ns/*/sa/web", id: "spiffe://example.org/ns/prod/sa/web/x"},
		{name: "trailing wildcard", pattern: "spiffe://example.org/ns/*", id: "spiffe://example.org/ns/prod", expected: true},
		{name: "trailing wildcard needs a segment", pattern: "spiffe://example.org/ns/*", id: "spiffe://example.org/ns"},
		{name: "trailing wildcard one segment only", pattern: "spiffe://example.org/ns/*", id: "spiffe://example.org/ns/prod/x"},
		{name: "only wildcard", pattern: "spiffe://example.org/*", id: "spiffe://example.org/web", expected: true},
		{name: "wildcard other trust domain", pattern: "spiffe://example.org/ns/*/sa/web", id: "spiffe://example.com/ns/prod/sa/web"},
		{name: "zero pattern", pattern: "", id: "spiffe://example.org/ns/prod/sa/web"},
		{name: "zero ID", pattern: "spiffe://example.org", id: ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := patternOrZero(tt.pattern)
			var id spiffeid.ID
			if tt.id != "" {
				id = spiffeid.RequireFromString(tt.id)
			}
			if got := p.Match(id); got != tt.expected {
				t.Errorf("%q.Match(%q) = %v, want %v", tt.pattern, tt.id, got, tt.expected)
			}
			err := p.Matcher()(id)
			if (err == nil) != tt.expected {
				t.Errorf("Matcher()(%q) = %v, want match %v", tt.id, err, tt.expected)
			}
		})
	}
}

func TestPatternMatcherError(t *testing.T) {
	err := RequirePattern("spiffe://example.org/web").Matcher()(spiffeid.RequireFromString("spiffe://example.org/api"))
	const want = `spiffeid: ID "spiffe://example.org/api" does not match pattern "spiffe://example.org/web"`
	if err == nil || err.Error() != want {
		t.Errorf("Matcher error = %v, want %q", err, want)
	}
}

func TestPatternCovers(t *testing.T) {
	for _, tt := range []struct {
		name     string
		p, q     string // "" for the zero Pattern
		expected bool
	}{
		{name: "equal exact", p: "spiffe://example.org/ns/prod/sa/web", q: "spiffe://example.org/ns/prod/sa/web", expected: true},
		{name: "equal wildcard", p: "spiffe://example.org/ns/*/sa/web", q: "spiffe://example.org/ns/*/sa/web", expected: true},
		{name: "wildcard covers exact", p: "spiffe://example.org/ns/*/sa/web", q: "spiffe://example.org/ns/prod/sa/web", expected: true},
		{name: "exact does not cover wildcard", p: "spiffe://example.org/ns/prod/sa/web", q: "spiffe://example.org/ns/*/sa/web"},
		{name: "wider wildcard covers narrower", p: "spiffe://example.org/ns/*/sa/*", q: "spiffe://example.org/ns/*/sa/web", expected: true},
		{name: "overlapping wildcards", p: "spiffe://example.org/ns/prod/sa/*", q: "spiffe://example.org/ns/*/sa/web"},
		{name: "different literal", p: "spiffe://example.org/ns/*/sa/web", q: "spiffe://example.org/ns/prod/sa/api"},
		{name: "fewer segments", p: "spiffe://example.org/ns/*", q: "spiffe://example.org/ns/prod/sa/web"},
		{name: "more segments", p: "spiffe://example.org/ns/*/sa/web/x", q: "spiffe://example.org/ns/prod/sa/web"},
		{name: "trust domain covers path", p: "spiffe://example.org", q: "spiffe://example.org/ns/*/sa/web", expected: true},
		{name: "trust domain covers itself", p: "spiffe://example.org", q: "spiffe://example.org", expected: true},
		{name: "path does not cover trust domain", p: "spiffe://example.org/*", q: "spiffe://example.org"},
		{name: "other trust domain", p: "spiffe://example.org", q: "spiffe://example.com/ns/prod/sa/web"},
		{name: "zero p", p: "", q: "spiffe://example.org"},
		{name: "zero q", p: "spiffe://example.org", q: ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, q := patternOrZero(tt.p), patternOrZero(tt.q)
			if got := p.Covers(q); got != tt.expected {
				t.Errorf("%q.Covers(%q) = %v, want %v", tt.p, tt.q, got, tt.expected)
			}
		})
	}
}

// patternOrZero parses s, or returns the zero Pattern for "".
func patternOrZero(s string) Pattern {
	if s == "" {
		return Pattern{}
	}
	return RequirePattern(s)
}

func TestPatternText(t *testing.T) {
	type doc struct {
		P Pattern `json:"p"`
	}
	in := doc{P: RequirePattern("spiffe://example.org/ns/*/sa/web")}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{"p":"spiffe://example.org/ns/*/sa/web"}` {
		t.Errorf("json.Marshal = %s", b)
	}
	var out doc
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if out != in {
		t.Errorf("round trip = %v, want %v", out.P, in.P)
	}

	// The zero Pattern marshals to "" and "" unmarshals to the zero Pattern.
	b, err = json.Marshal(doc{})
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != `{"p":""}` {
		t.Errorf("json.Marshal(zero) = %s", b)
	}
	out = in
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if !out.P.IsZero() {
		t.Errorf("unmarshal of empty text = %v, want zero", out.P)
	}

	const wantErr = `spiffeid: pattern "spiffe://example.org/a*": "*" must be a whole path segment`
	if err := out.P.UnmarshalText([]byte("spiffe://example.org/a*")); err == nil || err.Error() != wantErr {
		t.Errorf("UnmarshalText error = %v, want %q", err, wantErr)
	}
}

func FuzzParsePattern(f *testing.F) {
	for _, s := range []string{
		"spiffe://example.org",
		"spiffe://example.org/ns/*/sa/web",
		"spiffe://example.org/ns/prod/sa/web",
		"spiffe://example.org/*",
		"spiffe://example.org/**",
		"spiffe://example.org/a*",
		"spiffe://*.org/a",
		"spiffe://example.org/",
		"spiffe://example.org//a",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePattern(s)
		if err != nil {
			return
		}
		if p.IsZero() {
			t.Fatalf("ParsePattern(%q) returned the zero Pattern without error", s)
		}
		p2, err := ParsePattern(p.String())
		if err != nil {
			t.Fatalf("ParsePattern(%q) = %q, which does not parse: %v", s, p, err)
		}
		if p2 != p {
			t.Fatalf("round trip of %q: %#v != %#v", s, p2, p)
		}
		if !p.Covers(p) {
			t.Fatalf("%q does not cover itself", p)
		}
		if id, err := spiffeid.FromString(s); err == nil && !p.Match(id) {
			t.Fatalf("%q does not match itself as an ID", s)
		}
	})
}
