package protocol

// Token request parameter names (RFC 8693 §2.1, RFC 6749 §4.4.2), the
// same in a form body, a JSON body and, as field names, in the gRPC
// ExchangeRequest.
const (
	ParamGrantType          = "grant_type"
	ParamClientID           = "client_id"
	ParamScope              = "scope"
	ParamAudience           = "audience"
	ParamResource           = "resource"
	ParamSubjectToken       = "subject_token"
	ParamSubjectTokenType   = "subject_token_type"
	ParamActorToken         = "actor_token"
	ParamActorTokenType     = "actor_token_type"
	ParamRequestedTokenType = "requested_token_type"
	// ParamImpersonate is the extension parameter "impersonate=true": a
	// token for the subject without an act claim, where policy allows it.
	ParamImpersonate = "impersonate"
)

// Client authentication parameters other than mTLS (RFC 6749 §2.3.1,
// RFC 7521 §4.2); the server refuses a request that carries one, as it
// authenticates clients by their X509-SVID only (RFC 8705 §2.1).
const (
	ParamClientSecret        = "client_secret"
	ParamClientAssertion     = "client_assertion"
	ParamClientAssertionType = "client_assertion_type"
)
