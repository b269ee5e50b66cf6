package audit

import "time"

// Outcomes of a Record.
const (
	OutcomeIssued  = "issued"
	OutcomeRefused = "refused"
	// OutcomeActive and OutcomeInactive are the answers of an
	// introspection (RFC 7662 §2.2); a refused introspection request is
	// OutcomeRefused.
	OutcomeActive   = "active"
	OutcomeInactive = "inactive"
)

// OperationIntrospect is the Operation of an introspection record.
const OperationIntrospect = "introspect"

// Record is one token decision. Empty fields are left out of the JSON.
type Record struct {
	Time time.Time `json:"time"`
	// RequestID is also returned to the caller (HTTP X-Request-Id, gRPC
	// trailer x-request-id).
	RequestID string `json:"request_id"`
	// Transport is "http" or "grpc".
	Transport string `json:"transport"`
	// Operation is empty for a token request and OperationIntrospect for
	// an RFC 7662 introspection, whose record has the caller, the
	// outcome, and the token's kid (from its header, when it parses) and
	// jti (when it verified), never the token.
	Operation string `json:"operation,omitempty"`
	// Outcome is OutcomeIssued or OutcomeRefused (OutcomeActive,
	// OutcomeInactive or OutcomeRefused for an introspection); Error is the OAuth error
	// code of a refusal, Reason the error_description sent to the caller
	// and Detail the server-side detail (a library's error text) when
	// there is one.
	Outcome string `json:"outcome"`
	Error   string `json:"error,omitempty"`
	Reason  string `json:"reason,omitempty"`
	Detail  string `json:"detail,omitempty"`

	// Caller is the SPIFFE ID of the client certificate and X5TS256 its
	// thumbprint (RFC 8705 §3.1), when the client presented a valid one.
	Caller     string `json:"caller,omitempty"`
	X5TS256    string `json:"x5t_s256,omitempty"`
	RemoteAddr string `json:"remote_addr,omitempty"`
	// ProxySPIFFEID is the SPIFFE ID of the trusted proxy that forwarded
	// Caller's certificate, when the caller came through one.
	ProxySPIFFEID string `json:"proxy_spiffe_id,omitempty"`

	// The request (RFC 8693 §2.1), as sent.
	GrantType          string   `json:"grant_type,omitempty"`
	SubjectTokenType   string   `json:"subject_token_type,omitempty"`
	ActorTokenType     string   `json:"actor_token_type,omitempty"`
	RequestedTokenType string   `json:"requested_token_type,omitempty"`
	RequestedAudience  []string `json:"requested_audience,omitempty"`
	RequestedScope     string   `json:"requested_scope,omitempty"`
	Impersonate        bool     `json:"impersonate,omitempty"`

	// Subject is the subject token's subject once verified; for an issued
	// token, its "sub".
	Subject string `json:"subject,omitempty"`
	// Rule is the pattern of the policy rule applied.
	Rule string `json:"rule,omitempty"`

	// The issued token: its type, audience, granted scope, act chain
	// (outermost actor first), jti, signing kid and expiry.
	IssuedTokenType string   `json:"issued_token_type,omitempty"`
	Audience        []string `json:"audience,omitempty"`
	Scope           string   `json:"scope,omitempty"`
	Act             []string `json:"act,omitempty"`
	JTI             string   `json:"jti,omitempty"`
	KID             string   `json:"kid,omitempty"`
	ExpiresAt       int64    `json:"expires_at,omitempty"`
}
