package accesstoken

import (
	"errors"
	"strings"
)

// Refusal says why a resource server refused an access token, in a form a
// client can act on: a token bound to another certificate can be re-bound
// (RFC 8693 exchange of the token, which the STS binds to the certificate
// it sees), a bad token cannot.
//
// The middlewares of this module (httpauth, grpcauth, extauthz) send it
// with every invalid_token refusal: over HTTP as the RFC 6750 §3
// extension auth-param ChallengeParamRefusal of the Bearer challenge,
//
//	WWW-Authenticate: Bearer error="invalid_token",
//	  error_description="the token is not bound to the client certificate",
//	  refusal="binding_mismatch"
//
// and over gRPC as a google.rpc.ErrorInfo detail of the Unauthenticated
// status, domain ErrorInfoDomain and reason Refusal.ErrorInfoReason. The
// error stays invalid_token either way, as RFC 8705 §3 requires for a
// binding mismatch.
type Refusal string

// The kinds of Refusal.
const (
	// RefusalBadToken: the token itself is not acceptable here (malformed,
	// forged, expired, for another audience or issuer), or there was no
	// client certificate to check it against. Presenting it again, or
	// re-binding it, cannot help.
	RefusalBadToken Refusal = "bad_token"
	// RefusalBindingMismatch: the token is valid in every other respect
	// but its cnf x5t#S256 (RFC 8705 §3.1) is not the thumbprint of the
	// client certificate it arrived with; for example a sidecar that
	// originates mTLS has rotated its X509-SVID.
	RefusalBindingMismatch Refusal = "binding_mismatch"
)

// ChallengeParamRefusal is the name of the RFC 6750 §3 extension
// auth-param that carries a Refusal in a Bearer challenge.
const ChallengeParamRefusal = "refusal"

// ErrorInfoDomain is the google.rpc.ErrorInfo domain of the Refusal detail
// of a gRPC Unauthenticated status. It differs from the STS's own
// ErrorInfo domain ("spiffe-sts", an OAuth error of the token endpoint).
const ErrorInfoDomain = "accesstoken.spiffe-sts"

// RefusalOf returns the Refusal for an error of Verifier.Verify:
// RefusalBindingMismatch for ErrNotBound, RefusalBadToken for any other
// error, and "" for nil.
func RefusalOf(err error) Refusal {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrNotBound):
		return RefusalBindingMismatch
	default:
		return RefusalBadToken
	}
}

// ErrorInfoReason returns r as a google.rpc.ErrorInfo reason
// (UPPER_SNAKE_CASE): BAD_TOKEN or BINDING_MISMATCH.
func (r Refusal) ErrorInfoReason() string { return strings.ToUpper(string(r)) }

// RefusalFromErrorInfo returns the Refusal of a google.rpc.ErrorInfo with
// domain and reason; "" when it is not one (another domain, an unknown
// reason).
func RefusalFromErrorInfo(domain, reason string) Refusal {
	if domain != ErrorInfoDomain {
		return ""
	}
	for _, r := range []Refusal{RefusalBadToken, RefusalBindingMismatch} {
		if reason == r.ErrorInfoReason() {
			return r
		}
	}
	return ""
}

// Challenge is an RFC 6750 §3 Bearer challenge as a client reads it.
type Challenge struct {
	// Error is the error code: invalid_request, invalid_token or
	// insufficient_scope; empty when the request had no token.
	Error string
	// Description is the error_description, for people.
	Description string
	// Scope is the scope attribute, the scopes required.
	Scope string
	// Refusal is the ChallengeParamRefusal extension; empty when the
	// server sent none (a server other than this module's middlewares).
	Refusal Refusal
}

// ParseChallenge returns the first Bearer challenge of the
// WWW-Authenticate field values (RFC 9110 §11.6.1: challenges separated by
// commas, in one or several values; scheme and parameter names are
// case-insensitive; values are tokens or quoted strings). It returns false
// when there is no Bearer challenge, or when a value up to and including
// the Bearer challenge is malformed or repeats a parameter (RFC 6750 §3),
// so that a client acts on nothing it is unsure of.
func ParseChallenge(values []string) (Challenge, bool) {
	for _, v := range values {
		c, found, ok := parseChallenges(v)
		if !ok {
			return Challenge{}, false
		}
		if found {
			return c, true
		}
	}
	return Challenge{}, false
}

// parseChallenges reads the challenges of one field value up to the first
// Bearer one.
func parseChallenges(s string) (c Challenge, found, ok bool) {
	p := 0
	for {
		p = skipListSeparators(s, p)
		if p == len(s) {
			return Challenge{}, false, true
		}
		scheme, q := readToken(s, p)
		if scheme == "" {
			return Challenge{}, false, false
		}
		bearer := strings.EqualFold(scheme, "Bearer")
		p = skipOWS(s, q)
		if p == len(s) || s[p] == ',' {
			// A challenge without parameters.
			if bearer {
				return Challenge{}, true, true
			}
			continue
		}
		if p == q {
			return Challenge{}, false, false // no space after the scheme
		}
		if end, isToken68 := readToken68(s, p); isToken68 {
			if bearer {
				return Challenge{}, false, false // RFC 6750 §3 defines no token68
			}
			p = end
			continue
		}
		var seen []string
		for {
			name, n := readToken(s, p)
			n = skipOWS(s, n)
			if name == "" || n == len(s) || s[n] != '=' {
				return Challenge{}, false, false
			}
			value, n, valid := readValue(s, skipOWS(s, n+1))
			if !valid {
				return Challenge{}, false, false
			}
			name = strings.ToLower(name)
			for _, prev := range seen {
				if prev == name {
					return Challenge{}, false, false
				}
			}
			seen = append(seen, name)
			if bearer {
				switch name {
				case "error":
					c.Error = value
				case "error_description":
					c.Description = value
				case "scope":
					c.Scope = value
				case ChallengeParamRefusal:
					c.Refusal = Refusal(value)
				}
			}
			p = skipOWS(s, n)
			if p == len(s) {
				return c, bearer, true
			}
			if s[p] != ',' {
				return Challenge{}, false, false
			}
			// After the comma: another parameter (token "=") or the next
			// challenge.
			p = skipListSeparators(s, p)
			next, m := readToken(s, p)
			if m = skipOWS(s, m); next != "" && m < len(s) && s[m] == '=' {
				continue
			}
			if bearer {
				return c, true, true
			}
			break
		}
	}
}

// isTchar reports whether b is an RFC 9110 §5.6.2 tchar.
func isTchar(b byte) bool {
	switch {
	case b >= 'a' && b <= 'z', b >= 'A' && b <= 'Z', b >= '0' && b <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", b) >= 0
}

func readToken(s string, p int) (string, int) {
	start := p
	for p < len(s) && isTchar(s[p]) {
		p++
	}
	return s[start:p], p
}

// readToken68 reports whether a token68 (RFC 9110 §11.2) starts at p and
// ends the challenge, and where it ends.
func readToken68(s string, p int) (int, bool) {
	start := p
	for p < len(s) {
		b := s[p]
		if b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || strings.IndexByte("-._~+/", b) >= 0 {
			p++
			continue
		}
		break
	}
	if p == start {
		return 0, false
	}
	for p < len(s) && s[p] == '=' {
		p++
	}
	end := skipOWS(s, p)
	return end, end == len(s) || s[end] == ','
}

// readValue reads a token or an RFC 9110 §5.6.4 quoted-string.
func readValue(s string, p int) (string, int, bool) {
	if p < len(s) && s[p] != '"' {
		v, n := readToken(s, p)
		return v, n, v != ""
	}
	if p == len(s) {
		return "", p, false
	}
	var b strings.Builder
	for p++; p < len(s); p++ {
		switch c := s[p]; {
		case c == '"':
			return b.String(), p + 1, true
		case c == '\\':
			p++
			if p == len(s) || !isQuotedPairChar(s[p]) {
				return "", p, false
			}
			b.WriteByte(s[p])
		case c == '\t' || c >= 0x20 && c != 0x7f:
			b.WriteByte(c)
		default:
			return "", p, false
		}
	}
	return "", p, false
}

func isQuotedPairChar(c byte) bool { return c == '\t' || c >= 0x20 && c != 0x7f }

func skipOWS(s string, p int) int {
	for p < len(s) && (s[p] == ' ' || s[p] == '\t') {
		p++
	}
	return p
}

// skipListSeparators skips OWS and the commas of an RFC 9110 §5.6.1
// list, empty elements included.
func skipListSeparators(s string, p int) int {
	for p < len(s) && (s[p] == ' ' || s[p] == '\t' || s[p] == ',') {
		p++
	}
	return p
}
