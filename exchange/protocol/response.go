package protocol

// Response is the RFC 8693 §2.2.1 success response (RFC 6749 §5.1 for
// client_credentials, where IssuedTokenType is omitted).
type Response struct {
	AccessToken     string    `json:"access_token"`
	IssuedTokenType TokenType `json:"issued_token_type,omitempty"`
	TokenType       string    `json:"token_type"`
	ExpiresIn       int64     `json:"expires_in"`
	Scope           string    `json:"scope,omitempty"`
}
