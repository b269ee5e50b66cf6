// Command spiffe-sts is an OAuth 2.0 token exchange server (RFC 8693) for
// SPIFFE workloads. Workloads connect over mTLS with their X509-SVIDs and
// receive RFC 9068 JWT access tokens bound to their certificate
// (RFC 8705 §3.1).
//
// Usage:
//
//	spiffe-sts run -config FILE
//	spiffe-sts validate -config FILE
//	spiffe-sts help
//
// "validate" loads and checks the configuration file, without touching the
// network or key files, and prints
//
//	FILE: configuration OK (N policy rules)
//
// "run" starts the server:
//
//  1. It starts the plain HTTP health listener (health_address), if
//     configured: /healthz is always 200, /readyz is 200 once the token
//     server runs and has its SVID and bundles, 503 before.
//  2. It waits for the server's X509-SVID and the X.509 and JWT bundles from
//     the Workload API (workload_api_socket, else SPIFFE_ENDPOINT_SOCKET)
//     and checks that the SVID is in trust_domain.
//  3. It loads the signing key for signing_algorithm from data_dir/keys,
//     creating it if missing; keys of the other algorithms found there are
//     published in the JWKS so tokens they signed still verify.
//  4. It serves the token endpoint, metadata and JWKS over TLS on
//     bind_address with its rotating X509-SVID.
//
// SIGHUP re-reads the configuration file and replaces the policy; if the
// new file has any error the old policy stays in force. Changes outside the
// policy blocks need a restart. SIGTERM and SIGINT shut the server down
// gracefully (at most 10s).
//
// Exit codes: 0 success, 1 configuration or runtime error, 2 usage error.
//
// # Configuration
//
// The file is HCL. Unknown attributes and blocks are errors, and every
// error names the file, line and key:
//
//	sts.hcl:14: policy "spiffe://example.org/ns/*/sa/web": max_ttl: invalid duration "5x"
//
// The schema, with defaults:
//
//	server {
//	  trust_domain        = "example.org"                  # required
//	  issuer_url          = "https://sts.example.org:8443" # required; https, no path, query or fragment
//	  bind_address        = "0.0.0.0:8443"                 # required; host:port
//	  data_dir            = "/var/lib/spiffe-sts"          # required; keys live in data_dir/keys
//	  workload_api_socket = "unix:///run/spire/agent.sock" # default $SPIFFE_ENDPOINT_SOCKET; one is required
//	  federates_with      = ["partner.example"]            # default none; trust domains that may also call
//	  health_address      = "0.0.0.0:8081"                 # default none; plain HTTP /healthz and /readyz
//	  log_level           = "info"                         # trace, debug, info (default), warn or error
//	  log_format          = "text"                         # text (default) or json
//	}
//
//	issuer {                                               # optional
//	  signing_algorithm = "ES256"                          # ES256 (default), EdDSA or RS256
//	  default_ttl       = "5m"                             # default 5m; max_ttl of rules without one
//	}
//
//	policy "spiffe://example.org/ns/*/sa/web" {            # zero or more; the label is an ID pattern
//	  audiences      = ["spiffe://example.org/api"]        # required, at least one
//	  scopes         = ["read", "write"]                   # scope ceiling; default none
//	  default_scopes = ["read"]                            # granted when none is requested; subset of scopes
//	  max_ttl        = "2m"                                # default issuer.default_ttl
//	}
//
// Policy rules are tried in file order and the first whose pattern matches
// the caller's SPIFFE ID applies; a caller that no rule matches is denied.
// A pattern is an exact SPIFFE ID, a trust domain ("spiffe://example.org",
// every ID in it) or an ID with "*" path segments, each matching one
// segment. A rule that an earlier rule makes unreachable is an error.
// Durations are Go durations ("90s", "5m") and must be positive.
//
// See testdata/example.hcl for a complete example.
package main
