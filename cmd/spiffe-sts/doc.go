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
// network or key files (external_issuer blocks are checked as written:
// their jwks_file, ca_file and jwks_url are not read), and prints
//
//	FILE: configuration OK (N policy rules[, M external issuers])
//
// "run" starts the server:
//
//  1. It starts the plain HTTP health listener (health_address), if
//     configured: /healthz is always 200, /readyz is 200 once the token
//     server runs and has its SVID and bundles, 503 before.
//  2. It loads the keys of each external_issuer: it reads jwks_file, or
//     fetches jwks_url (trusting ca_file, else the system roots; at most
//     30s). A key set that cannot be loaded stops start-up.
//  3. It waits for the server's X509-SVID and the X.509 and JWT bundles from
//     the Workload API (workload_api_socket, else SPIFFE_ENDPOINT_SOCKET)
//     and checks that the SVID is in trust_domain.
//  4. It loads the signing key for signing_algorithm from data_dir/keys,
//     creating it if missing; keys of the other algorithms found there are
//     published in the JWKS so tokens they signed still verify.
//  5. It serves the token endpoint, metadata and JWKS over TLS on
//     bind_address with its rotating X509-SVID.
//
// SIGHUP re-reads the configuration file and replaces the policy,
// delegation blocks included; if the new file has any error the old policy
// stays in force. Changes outside the policy blocks, external_issuer blocks
// among them, need a restart (a warning names the changed sections). SIGTERM and SIGINT shut the server down
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
//	external_issuer "corp" {                              # zero or more; the label is the name policy uses
//	  issuer     = "https://idp.example.com"               # required; the tokens' "iss", an https URL
//	  jwks_url   = "https://idp.example.com/jwks"          # exactly one of jwks_url (https) and jwks_file
//	  jwks_file  = "/etc/spiffe-sts/corp-jwks.json"
//	  ca_file    = "/etc/spiffe-sts/corp-ca.pem"           # with jwks_url only; default the system roots
//	  audience   = "spiffe-sts"                            # required; the tokens' "aud" must contain it
//	  algorithms = ["RS256", "ES256"]                      # default RS256 and ES256; RS*, PS*, ES*, EdDSA
//	}
//
//	policy "spiffe://example.org/ns/*/sa/web" {            # zero or more; the label is an ID pattern
//	  audiences      = ["spiffe://example.org/api"]        # required, at least one
//	  scopes         = ["read", "write"]                   # scope ceiling; default none
//	  default_scopes = ["read"]                            # granted when none is requested; subset of scopes
//	  max_ttl        = "2m"                                # default issuer.default_ttl
//
//	  delegation {                                         # optional; default: only tokens for itself
//	    subjects      = ["spiffe://example.org/ns/shop/*"] # ID patterns the caller may act for
//	    issuers       = ["corp"]                           # external_issuer names whose users it may act for
//	    max_depth     = 2                                  # required, positive; actors in the act chain
//	    impersonation = false                              # default false; may drop the act claim on request
//	  }
//	}
//
// An external_issuer's name is letters, digits, ".", "_" and "-", unique
// in the file. Its tokens are JWTs: the signature must verify with the
// JWKS key named by "kid" under one of the algorithms, and "exp" and "sub"
// are required (see package exchange/extissuer). A JWKS key without "alg"
// gets the single accepted algorithm that fits its type, or is unusable.
// A delegation block needs subjects or issuers, and its issuers must name
// external_issuer blocks.
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
