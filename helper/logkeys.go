package helper

// Log keys. Every structured log line of the helper uses these; tokens and
// keys are never logged.
const (
	logKeySPIFFEID  = "spiffe_id"
	logKeyX5TS256   = "x5t_s256"
	logKeyToken     = "token" // the configured name of a token, never its value
	logKeyExpires   = "expires"
	logKeyNotAfter  = "not_after"
	logKeyReason    = "reason"
	logKeyAttempt   = "attempt"
	logKeyRetryIn   = "retry_in"
	logKeyError     = "error"
	logKeyDirectory = "directory"
)
