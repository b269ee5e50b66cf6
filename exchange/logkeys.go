package exchange

// Log keys. Every structured log line of this package uses these; a raw
// token or key is never logged.
const (
	logKeySPIFFEID    = "spiffe_id"
	logKeySubject     = "subject"
	logKeyJTI         = "jti"
	logKeyX5TS256     = "x5t_s256"
	logKeyGrantType   = "grant_type"
	logKeyAudience    = "audience"
	logKeyScope       = "scope"
	logKeyError       = "error"
	logKeyReason      = "reason"
	logKeyRemote      = "remote_addr"
	logKeyExpiresIn   = "expires_in"
	logKeyActors      = "act"
	logKeyIssuer      = "issuer"
	logKeyRequestID   = "request_id"
	logKeyTrustDomain = "trust_domain"
	logKeyOutcome     = "outcome"
	logKeyRetryAfter  = "retry_after"
	// logKeyProxy is the SPIFFE ID of the trusted proxy that forwarded
	// the client's certificate.
	logKeyProxy = "proxy_spiffe_id"
	// logKeySecurityEvent marks refusals that suggest an attack, such as a
	// stolen token presented for exchange.
	logKeySecurityEvent = "security_event"
)
