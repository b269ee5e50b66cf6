// Package bearer holds what the grpcauth and httpauth middleware share:
// reading RFC 6750 bearer credentials, describing verification failures
// without echoing the token, and checking scopes.
package bearer

import (
	"errors"
	"strings"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/internal/jwtcheck"
)

// Errors of Token.
var (
	// ErrMissing means no bearer credentials were presented.
	ErrMissing = errors.New("missing bearer token")
	// ErrMalformed means the credentials say Bearer but carry no usable
	// token, or several were presented.
	ErrMalformed = errors.New("malformed bearer credentials")
)

// Token returns the token of the Authorization values (RFC 6750 §2.1:
// "Bearer" 1*SP b64token, the scheme matched case-insensitively). No value,
// or one with another scheme, is ErrMissing; several values, or a Bearer
// value without exactly one token, is ErrMalformed.
func Token(values []string) (string, error) {
	switch len(values) {
	case 0:
		return "", ErrMissing
	case 1:
	default:
		return "", ErrMalformed
	}
	scheme, rest, _ := strings.Cut(values[0], " ")
	if !strings.EqualFold(scheme, "Bearer") {
		return "", ErrMissing
	}
	token := strings.TrimLeft(rest, " ")
	if token == "" || !isB64Token(token) {
		return "", ErrMalformed
	}
	return token, nil
}

// isB64Token reports whether s matches the b64token of RFC 6750 §2.1.
func isB64Token(s string) bool {
	end := len(s)
	for end > 0 && s[end-1] == '=' {
		end--
	}
	if end == 0 {
		return false
	}
	for i := range end {
		switch c := s[i]; {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9',
			c == '-', c == '.', c == '_', c == '~', c == '+', c == '/':
		default:
			return false
		}
	}
	return true
}

// Describe returns a short description of why Verify rejected a token. It
// is one of a fixed set of phrases, so it never echoes the token or values
// from it, and it is safe in an RFC 6750 §3 error_description.
func Describe(err error) string {
	var expired *accesstoken.ExpiredError
	switch {
	case errors.As(err, &expired):
		return "the token has expired"
	case errors.Is(err, accesstoken.ErrNotBound):
		return "the token is not bound to the client certificate"
	case errors.Is(err, accesstoken.ErrNoCertificate):
		return "no client certificate"
	case errors.Is(err, accesstoken.ErrUnknownKey):
		return "the token is signed with an unknown key"
	case errors.Is(err, accesstoken.ErrSignature):
		return "the token signature does not verify"
	case errors.Is(err, accesstoken.ErrType):
		return "the token is not an access token"
	case errors.Is(err, accesstoken.ErrIssuer):
		return "the token is from another issuer"
	case errors.Is(err, accesstoken.ErrAudience):
		return "the token is not for this resource server"
	case errors.Is(err, accesstoken.ErrNotYetValid):
		return "the token is not yet valid"
	case errors.Is(err, accesstoken.ErrMalformed), errors.Is(err, ErrMalformed):
		return "the token is malformed"
	default:
		return "the token is invalid"
	}
}

// InvalidToken returns the RFC 6750 §3 invalid_token challenge for a
// token Verify rejected with err: its fixed description (Describe) and
// the accesstoken.ChallengeParamRefusal extension telling a binding
// mismatch from a bad token (accesstoken.RefusalOf).
func InvalidToken(err error) string {
	return InvalidTokenChallenge(Describe(err), accesstoken.RefusalOf(err))
}

// InvalidTokenChallenge returns the RFC 6750 §3 invalid_token challenge
// with description, one of a fixed set of phrases, and refusal.
func InvalidTokenChallenge(description string, refusal accesstoken.Refusal) string {
	return `Bearer error="invalid_token", error_description="` + description + `", ` +
		accesstoken.ChallengeParamRefusal + `="` + string(refusal) + `"`
}

// MissingScopes returns the scopes of required that claims lack.
func MissingScopes(claims *accesstoken.Claims, required []string) []string {
	var missing []string
	for _, s := range required {
		if !claims.HasScope(s) {
			missing = append(missing, s)
		}
	}
	return missing
}

// ValidScope reports whether s is a scope-token (RFC 6749 §3.3), which can
// also be written inside an RFC 6750 §3 quoted scope attribute.
func ValidScope(s string) bool { return jwtcheck.IsScopeToken(s) }
