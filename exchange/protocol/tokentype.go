package protocol

import (
	"errors"
	"fmt"
)

// TokenType is an RFC 8693 §3 token type identifier. The zero value means
// unset.
type TokenType string

// Token types spiffe-sts understands (RFC 8693 §3).
const (
	// TokenTypeAccessToken is an OAuth 2.0 access token; as a subject token
	// it must be one this server issued.
	TokenTypeAccessToken TokenType = "urn:ietf:params:oauth:token-type:access_token"
	// TokenTypeJWT is a JWT; as a subject token it must be a JWT-SVID.
	TokenTypeJWT TokenType = "urn:ietf:params:oauth:token-type:jwt"
)

// ParseTokenType returns the TokenType named by s, which must be one
// spiffe-sts supports.
func ParseTokenType(s string) (TokenType, error) {
	switch t := TokenType(s); t {
	case TokenTypeAccessToken, TokenTypeJWT:
		return t, nil
	case "":
		return "", errors.New("protocol: empty token type")
	default:
		return "", fmt.Errorf("protocol: unsupported token type %q", s)
	}
}

// RequireTokenType is ParseTokenType for literals; it panics on error.
func RequireTokenType(s string) TokenType {
	t, err := ParseTokenType(s)
	if err != nil {
		panic(err)
	}
	return t
}

// String returns the URN.
func (t TokenType) String() string { return string(t) }

// IsZero reports whether t is unset.
func (t TokenType) IsZero() bool { return t == "" }

// MarshalText implements encoding.TextMarshaler.
func (t TokenType) MarshalText() ([]byte, error) { return []byte(t), nil }

// GrantType is an OAuth 2.0 grant type identifier (RFC 6749 §4).
type GrantType string

// Grant types spiffe-sts supports.
const (
	// GrantTypeTokenExchange is RFC 8693 §2.1 token exchange.
	GrantTypeTokenExchange GrantType = "urn:ietf:params:oauth:grant-type:token-exchange"
	// GrantTypeClientCredentials is RFC 6749 §4.4, authenticated with
	// tls_client_auth (RFC 8705 §2.1).
	GrantTypeClientCredentials GrantType = "client_credentials"
)

// String returns the identifier.
func (g GrantType) String() string { return string(g) }

// IsZero reports whether g is unset.
func (g GrantType) IsZero() bool { return g == "" }

// MarshalText implements encoding.TextMarshaler.
func (g GrantType) MarshalText() ([]byte, error) { return []byte(g), nil }
