package protocol

// Endpoint paths, relative to the issuer URL (which has no path, see
// CheckIssuerURL).
const (
	// PathToken is the token endpoint (RFC 6749 §3.2, RFC 8693 §2).
	PathToken = "/token"
	// PathIntrospect is the token introspection endpoint (RFC 7662 §2).
	PathIntrospect = "/introspect"
	// PathJWKS is the jwks_uri of the metadata (RFC 8414 §2).
	PathJWKS = "/jwks"
	// PathOAuthMetadata is the RFC 8414 §3 well-known metadata path.
	PathOAuthMetadata = "/.well-known/oauth-authorization-server"
	// PathOpenIDMetadata is the OpenID Connect Discovery 1.0 §4 path,
	// serving the same document.
	PathOpenIDMetadata = "/.well-known/openid-configuration"
	// PathHealthz answers 200 while the process runs (liveness).
	PathHealthz = "/healthz"
	// PathReadyz answers 200 when the server can issue tokens (readiness).
	PathReadyz = "/readyz"
)
