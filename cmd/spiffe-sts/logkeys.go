package main

// Log keys. Every structured log line of the command uses these; tokens and
// keys are never logged.
const (
	logKeyAddress        = "address"
	logKeyIssuer         = "issuer"
	logKeyExternalIssuer = "external_issuer" // the name of an external_issuer block
	logKeySPIFFEID       = "spiffe_id"
	logKeyExpires        = "expires"
	logKeyConfig         = "config"
	logKeyRules          = "rules"
	logKeySections       = "sections"
	logKeyError          = "error"
)
