package issuer

// Log keys. Every structured log line in this package uses these constants,
// so the same datum always has the same key. Raw tokens are never logged.
const (
	logKeyJTI     = "jti"      // "jti" of a minted token
	logKeySubject = "subject"  // "sub" of a minted token: a SPIFFE ID, or a delegated external subject
	logKeyX5TS256 = "x5t_s256" // RFC 8705 certificate thumbprint the token is bound to
	logKeyKID     = "kid"      // key ID of the signing key
)
