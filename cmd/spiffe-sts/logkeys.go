package main

// Log keys. Every structured log line of the command uses these; tokens and
// keys are never logged.
const (
	logKeyAddress        = "address"
	logKeyIssuer         = "issuer"
	logKeyExternalIssuer = "external_issuer" // the name of an external_issuer block
	logKeySPIFFEID       = "spiffe_id"
	logKeyExpires        = "expires"
	logKeyRenewBy        = "renew_by" // when the SPIRE agent should have renewed the own X509-SVID
	logKeyConfig         = "config"
	logKeyRules          = "rules"
	logKeySections       = "sections"
	logKeyError          = "error"
)

// Log keys of the key ring's events.
const (
	logKeyKID       = "kid"
	logKeySeq       = "seq"
	logKeyAlgorithm = "alg"
	logKeyState     = "state"
	logKeyActivates = "activates"
	logKeyMaxTTL    = "max_token_ttl"
	logKeyPath      = "path"
	logKeyRequired  = "required"
)
