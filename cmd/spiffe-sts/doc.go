// Command spiffe-sts is an OAuth 2.0 token exchange server (RFC 8693) for
// SPIFFE workloads. Workloads connect over mTLS with their X509-SVIDs and
// receive RFC 9068 JWT access tokens bound to their certificate
// (RFC 8705 §3.1).
//
// Usage:
//
//	spiffe-sts run -config FILE
//	spiffe-sts validate -config FILE
//	spiffe-sts keys list -config FILE
//	spiffe-sts keys rotate -config FILE
//	spiffe-sts keys revoke -config FILE -kid KID
//	spiffe-sts healthcheck -config FILE [-shallow]
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
//     server runs and while its SVID is unexpired, every accepted trust
//     domain's bundle was confirmed by the Workload API within
//     max_bundle_age, a signing key is active and (with audit.required)
//     the audit sink works; 503 with one line per failing condition
//     otherwise. /metrics serves the Prometheus metrics of the process's
//     own registry (README, "Operating spiffe-sts"). It opens the audit
//     sink of the audit block, if any.
//  2. It loads the keys of each external_issuer: it reads jwks_file, or
//     fetches jwks_url (trusting ca_file, else the system roots; at most
//     30s). A key set that cannot be loaded stops start-up.
//  3. It loads the signing-key ring from the datastore (data_dir/keyring.json,
//     or PostgreSQL; at most 30s to connect), creating the first key, or
//     importing the key files of older versions from data_dir/keys (the key
//     of signing_algorithm signs, the others are published until their
//     tokens expire; the files are left in place). A store that cannot be
//     reached, a ring file that is corrupt or that group or others may
//     read, and a record that does not decrypt stop start-up, naming it;
//     nothing is overwritten. It then refreshes the ring every
//     refresh_interval, creating the next key when due.
//  4. It waits for the server's X509-SVID and the X.509 and JWT bundles from
//     the Workload API (workload_api_socket, else SPIFFE_ENDPOINT_SOCKET)
//     and checks that the SVID is in trust_domain.
//  5. It serves the token endpoint, metadata and JWKS over TLS on
//     bind_address with its rotating X509-SVID, writing one audit record
//     per token decision. It watches the Workload API stream and polls it
//     every max_bundle_age/3 for the bundles it holds. A pushed update
//     with a new own X509-SVID (a rotation) or a changed bundle confirms
//     the bundles it carries; a poll or unchanged update confirms them
//     only while the own X509-SVID is not overdue for renewal, that is
//     before NotBefore + lifetime/2 + max(lifetime/6, 15s): SPIRE renews
//     at a jittered half-life, so a SPIRE agent that has not renewed by
//     then cannot reach its server, and its cached answers prove nothing.
//     Callers of a trust domain whose bundle has gone unconfirmed for
//     bundle_hard_limit are refused with temporarily_unavailable (503,
//     Retry-After) until it is confirmed again. To keep serving until the
//     SVID expires while the SPIRE server is down, set bundle_hard_limit
//     to at least half the SVID TTL.
//
// "healthcheck" GETs /readyz (with -shallow, /healthz) on health_address
// and exits 0, or 1 with the body's reasons on stderr: a probe for
// containers and supervisors that have no curl.
//
// Signing keys rotate (package issuer/keyring): a new key is published in
// the JWKS for publication_window before it signs, signs for
// rotation_period, and stays published, retired, until the last token it
// signed has expired. Every replica signs from memory and switches at the
// time recorded in the ring, so replicas need not talk to each other. If
// the store becomes unreachable, a running server keeps signing with its
// in-memory key and stays ready; rotation waits. The log says so once
// ("key ring store unavailable; signing with the in-memory key; rotation
// waits") and again when the store is back, and records each key created,
// activated, retired, revoked and removed (kid, seq, state; never key
// material).
//
// SIGHUP re-reads the configuration file and replaces the policy,
// delegation blocks included; if the new file has any error the old policy
// stays in force. If the new policy allows longer tokens, retired keys stay
// published longer to match. Changes outside the policy blocks,
// external_issuer and datastore blocks among them, need a restart (a
// warning names the changed sections). SIGTERM and SIGINT shut the server
// down gracefully (at most 10s).
//
// "keys" manages the ring directly in the datastore of the configuration
// file, so it works while servers run; they pick the change up within
// refresh_interval:
//
//	$ spiffe-sts keys list -config sts.hcl
//	SEQ  KID       ALG    STATE    CREATED               ACTIVATES             REVOKED
//	1    kVvN...   ES256  active   2030-01-01T00:00:00Z  2030-01-01T00:00:00Z  -
//	$ spiffe-sts keys rotate -config sts.hcl
//	created key Fd9Q... (seq 2, ES256): published now, signs from 2030-01-01T12:10:00Z
//	$ spiffe-sts keys revoke -config sts.hcl -kid kVvN...
//	revoked key kVvN...: withdrawn from the JWKS; it signs no more
//	key Fd9Q... (seq 2, ES256) signs now
//
// rotate creates a key that signs after the publication window; revoke
// withdraws a key at once (a compromise response), and if it was the
// active key the next key, or a new one, signs from now on. Times are
// RFC 3339 UTC.
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
//	  data_dir            = "/var/lib/spiffe-sts"          # required; the embedded ring file and legacy keys/
//	  jwks_max_age        = "5m"                           # default 5m; Cache-Control max-age of /jwks and metadata
//	  workload_api_socket = "unix:///run/spire/agent.sock" # default $SPIFFE_ENDPOINT_SOCKET; one is required
//	  federates_with      = ["partner.example"]            # default none; trust domains that may also call
//	  health_address      = "0.0.0.0:8081"                 # default none; plain HTTP /healthz and /readyz
//	  log_level           = "info"                         # trace, debug, info (default), warn or error
//	  log_format          = "text"                         # text (default) or json
//	  max_bundle_age      = "5m"                           # default 5m; readiness limit of a bundle's confirmation age
//	  bundle_hard_limit   = "15m"                          # default 3 × max_bundle_age, not less; callers refused past it
//	}
//
//	audit {                                                # optional; no audit trail without it
//	  path      = "/var/log/spiffe-sts/audit.log"          # required; a file, or "-" for stdout
//	  max_size  = "100MiB"                                 # default 100MiB; B, KiB, MiB, GiB, KB, MB, GB
//	  max_files = 5                                        # default 5; rotated files kept
//	  required  = false                                    # default false; true fails closed on a lost sink
//	}
//
//	limits {                                               # optional
//	  per_caller_rps      = 50                             # default 0: off; else at least 1/3600; token bucket per caller SPIFFE ID
//	  per_caller_burst    = 100                            # default ceil(per_caller_rps), at least 1
//	  max_in_flight       = 1024                           # default 1024; token, gRPC and introspection requests
//	  read_header_timeout = "10s"                          # default 10s; not above read_timeout
//	  read_timeout        = "30s"                          # default 30s
//	  write_timeout       = "30s"                          # default 30s
//	  idle_timeout        = "2m"                           # default 2m; keep-alive and HTTP/2 (gRPC) connections
//	  tls_min_version     = "1.2"                          # "1.2" (default) or "1.3"
//	}
//
//	issuer {                                               # optional
//	  signing_algorithm = "ES256"                          # ES256 (default), EdDSA or RS256
//	  default_ttl       = "5m"                             # default 5m; max_ttl of rules without one
//	  rotation_period    = "24h"                           # default 24h; how long a key signs
//	  publication_window = "10m"                           # default 2 × jwks_max_age; < rotation_period
//	}
//
//	datastore "embedded" {                                 # at most one datastore block; this one is the default
//	  key_encryption_key_file = "/path/kek"                # optional; encrypts the keys in data_dir/keyring.json
//	  refresh_interval        = "2s"                       # default 2s
//	}
//
//	datastore "postgres" {                                 # for several replicas
//	  connection_string       = "postgres://..."           # exactly one of connection_string and
//	  connection_string_file  = "/var/run/secrets/spiffe-sts/datastore/connection-string" # connection_string_file
//	  key_encryption_key_file = "/var/run/secrets/spiffe-sts/kek/kek"  # required; 32 bytes, raw or base64
//	  refresh_interval        = "2s"                       # default 2s; how soon replicas see changes
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
//
//	  rate_limit {                                         # optional; default limits.per_caller_rps
//	    rps   = 10                                         # required, at least 1/3600; requests a second per caller
//	    burst = 20                                         # default ceil(rps), at least 1
//	    # or, alone: unlimited = true                      # no rate limit for this rule's callers
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
// A caller's rate limit is the rate_limit of the rule that applies to it,
// else limits.per_caller_rps (callers no rule matches included); a
// rate_limit { unlimited = true } exempts the rule's callers. It is one
// token bucket per caller SPIFFE ID, charged once per token, gRPC and
// introspection request once the caller is authenticated, before the
// request body is read. Rates are at least one request an hour, so
// Retry-After is at most 3600. Over it the answer is
// temporarily_unavailable as HTTP 429 (gRPC ResourceExhausted) with
// Retry-After; over max_in_flight, counted once the body is read, it is
// 503 (gRPC Unavailable) with Retry-After: 1. SIGHUP reloads rate_limit with the policy; the limits
// block needs a restart.
//
// The key-encryption key and connection string files may be symlinks (as
// Kubernetes mounts Secrets); their contents are never logged. The tables
// in PostgreSQL are created and migrated by the server on start.
//
// See testdata/example.hcl for a complete example.
package main
