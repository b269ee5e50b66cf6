package spiffeid

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

const (
	schemePrefix = "spiffe://"
	wildcard     = "*"
	// placeholder stands in for wildcard segments when the pattern is
	// validated with go-spiffe's SPIFFE ID rules.
	placeholder = "x"
)

// Pattern matches SPIFFE IDs. It is a comparable value type; the zero value
// means "unset" and matches nothing. Create one with [ParsePattern] or
// [RequirePattern].
//
// A pattern has one of three forms:
//
//   - an exact ID, "spiffe://example.org/ns/prod/sa/web", which matches only
//     that ID;
//   - a trust domain with no path, "spiffe://example.org", which matches
//     every ID in that trust domain (including the trust domain's own ID);
//   - an ID whose path has one or more "*" segments,
//     "spiffe://example.org/ns/*/sa/web", where each "*" matches exactly one
//     non-empty path segment.
//
// "*" must be a whole path segment; "**", "*" inside a segment and "*" in
// the trust domain are rejected. Literal segments follow the SPIFFE ID rules
// (SPIFFE-ID.md §2.2): no empty, "." or ".." segments, no trailing slash and
// only the characters [a-zA-Z0-9.-_].
type Pattern struct {
	td spiffeid.TrustDomain
	// path is "" for a trust-domain-wide pattern, otherwise a SPIFFE ID path
	// ("/a/*/b") in which "*" segments are wildcards.
	path string
	// text is the pattern as String returns it, made once by ParsePattern:
	// the policy rule's name goes into every audit record and metric.
	text string
}

// ParsePattern parses a pattern in one of the forms described on [Pattern].
func ParsePattern(s string) (Pattern, error) {
	if s == "" {
		return Pattern{}, errors.New("spiffeid: pattern is empty")
	}
	rest, ok := strings.CutPrefix(s, schemePrefix)
	if !ok {
		return Pattern{}, fmt.Errorf("spiffeid: pattern %q: scheme must be %q", s, "spiffe")
	}
	tdName, path := rest, ""
	if i := strings.IndexByte(rest, '/'); i >= 0 {
		tdName, path = rest[:i], rest[i:]
	}
	if strings.Contains(tdName, wildcard) {
		return Pattern{}, fmt.Errorf("spiffeid: pattern %q: trust domain cannot contain %q", s, wildcard)
	}

	// Replace wildcard segments by a valid placeholder so that go-spiffe
	// validates everything else with the SPIFFE ID rules.
	var check strings.Builder
	check.Grow(len(s))
	check.WriteString(schemePrefix)
	check.WriteString(tdName)
	if path != "" {
		segs := path[1:]
		for {
			seg, more, found := strings.Cut(segs, "/")
			switch {
			case seg == wildcard:
				seg = placeholder
			case strings.Contains(seg, "**"):
				return Pattern{}, fmt.Errorf("spiffeid: pattern %q: %q is not supported; %q matches exactly one segment", s, "**", wildcard)
			case strings.Contains(seg, wildcard):
				return Pattern{}, fmt.Errorf("spiffeid: pattern %q: %q must be a whole path segment", s, wildcard)
			}
			check.WriteByte('/')
			check.WriteString(seg)
			if !found {
				break
			}
			segs = more
		}
	}
	id, err := spiffeid.FromString(check.String())
	if err != nil {
		return Pattern{}, fmt.Errorf("spiffeid: pattern %q: %w", s, err)
	}
	td := id.TrustDomain()
	return Pattern{td: td, path: path, text: schemePrefix + td.Name() + path}, nil
}

// RequirePattern is like [ParsePattern] but panics on error. Use it only for
// literals in code and tests.
func RequirePattern(s string) Pattern {
	p, err := ParsePattern(s)
	if err != nil {
		panic(err)
	}
	return p
}

// Match reports whether id matches p. The zero Pattern matches nothing. Match
// does not allocate.
func (p Pattern) Match(id spiffeid.ID) bool {
	if p.td.IsZero() || id.TrustDomain() != p.td {
		return false
	}
	if p.path == "" {
		return true
	}
	idPath := id.Path()
	if idPath == "" {
		return false
	}
	return matchSegments(p.path[1:], idPath[1:])
}

// Covers reports whether every ID that q matches is also matched by p, that
// is, whether q is redundant after p. It holds when both have the same trust
// domain and either p is trust-domain-wide, or p and q have the same number of
// segments and each segment of p is "*" or equal to q's. A zero Pattern
// covers nothing and is covered by nothing.
func (p Pattern) Covers(q Pattern) bool {
	switch {
	case p.td.IsZero() || q.td.IsZero() || p.td != q.td:
		return false
	case p.path == "":
		return true
	case q.path == "":
		return false
	}
	return matchSegments(p.path[1:], q.path[1:])
}

// matchSegments walks the slash-separated segments of pattern and path (both
// without the leading slash) in step. A "*" segment in pattern matches any
// one segment of path, including a "*" of another pattern; other segments
// must be equal. Neither argument has empty segments: both come from
// validated SPIFFE ID paths.
func matchSegments(pattern, path string) bool {
	for {
		pseg, prest, pmore := strings.Cut(pattern, "/")
		seg, rest, more := strings.Cut(path, "/")
		if (pseg != wildcard && pseg != seg) || pmore != more {
			return false
		}
		if !pmore {
			return true
		}
		pattern, path = prest, rest
	}
}

// Matcher returns a [spiffeid.Matcher] that accepts the IDs p matches. Use it
// with tlsconfig.AdaptMatcher to authorize TLS peers by pattern.
func (p Pattern) Matcher() spiffeid.Matcher {
	return func(id spiffeid.ID) error {
		if !p.Match(id) {
			return fmt.Errorf("spiffeid: ID %q does not match pattern %q", id, p)
		}
		return nil
	}
}

// TrustDomain returns the trust domain of p, or the zero TrustDomain if p is
// zero.
func (p Pattern) TrustDomain() spiffeid.TrustDomain {
	return p.td
}

// IsZero reports whether p is the zero (unset) Pattern.
func (p Pattern) IsZero() bool {
	return p.td.IsZero()
}

// String returns p in the syntax [ParsePattern] accepts, or "" if p is zero.
func (p Pattern) String() string {
	return p.text
}

// MarshalText implements [encoding.TextMarshaler]. The zero Pattern marshals
// to empty text.
func (p Pattern) MarshalText() ([]byte, error) {
	return []byte(p.String()), nil
}

// UnmarshalText implements [encoding.TextUnmarshaler]. Empty text yields the
// zero Pattern.
func (p *Pattern) UnmarshalText(text []byte) error {
	if len(text) == 0 {
		*p = Pattern{}
		return nil
	}
	parsed, err := ParsePattern(string(text))
	if err != nil {
		return err
	}
	*p = parsed
	return nil
}
