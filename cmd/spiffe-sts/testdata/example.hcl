# Example spiffe-sts configuration. Check it with
#
#   spiffe-sts validate -config example.hcl

server {
  # The trust domain of the server's own SPIFFE ID. Required.
  trust_domain = "example.org"

  # The issuer identifier exactly as clients reach it: https, no path.
  # It is the "iss" claim of every token. Required.
  issuer_url = "https://sts.example.org:8443"

  # Where the mTLS token endpoint listens. Required.
  bind_address = "0.0.0.0:8443"

  # Signing keys live in data_dir/keys; a missing key is created.
  data_dir = "/var/lib/spiffe-sts"

  # The SPIRE agent's Workload API. When absent, SPIFFE_ENDPOINT_SOCKET.
  workload_api_socket = "unix:///run/spire/agent-sockets/agent.sock"

  # Workloads of these trust domains may also call.
  federates_with = ["partner.example"]

  # Plain HTTP /healthz and /readyz for kubelet probes.
  health_address = "0.0.0.0:8081"

  log_level  = "info" # trace, debug, info, warn or error
  log_format = "json" # text or json
}

# Limits of each caller and of the listener. Without the block: no
# per-caller rate limit, at most 1024 requests in flight, the timeouts
# below and TLS 1.2 or later.
limits {
  # A token bucket per caller SPIFFE ID for callers whose policy rule has
  # no rate_limit, and for callers no rule matches; 0 (the default) is off.
  per_caller_rps   = 200
  per_caller_burst = 400

  # Token, gRPC and introspection requests served at once; the rest get
  # 503 with Retry-After: 1.
  max_in_flight = 1024

  read_header_timeout = "10s"
  read_timeout        = "30s"
  write_timeout       = "30s"
  idle_timeout        = "2m" # keep-alive, and HTTP/2 connections of the gRPC API
  tls_min_version     = "1.2" # or "1.3"
}

issuer {
  signing_algorithm = "ES256" # ES256, EdDSA or RS256
  default_ttl       = "5m"    # for policy rules without max_ttl
}

# An identity provider whose end-user tokens workloads may exchange, to act
# for the user (RFC 8693). The label is the name policy uses. Its keys are
# loaded when the server starts: validate reads neither jwks_file nor
# jwks_url, and changes need a restart.
external_issuer "corp" {
  # The "iss" of its tokens, compared exactly. Required.
  issuer = "https://idp.example.com"

  # Where its keys are: exactly one of jwks_url (the jwks_uri of its
  # OpenID configuration, refetched when it rotates keys) and jwks_file.
  # A relative path is relative to the working directory; use an absolute
  # path such as /etc/spiffe-sts/corp-jwks.json in production.
  # jwks_url = "https://idp.example.com/jwks"
  # ca_file  = "/etc/spiffe-sts/corp-ca.pem" # trust for jwks_url; default the system roots
  jwks_file = "testdata/corp-jwks.json"

  # Tokens must name this server in "aud". Required.
  audience = "spiffe-sts"

  # Accepted signature algorithms; default RS256 and ES256.
  algorithms = ["ES256"]
}

# Rules are tried in order and the first whose pattern matches the caller's
# SPIFFE ID applies; a caller no rule matches is denied. A rule that an
# earlier rule makes unreachable is an error.

# The web front ends of every namespace may call the API.
policy "spiffe://example.org/ns/*/sa/web" {
  audiences      = ["spiffe://example.org/api"]
  scopes         = ["read", "write"]
  default_scopes = ["read"]
  max_ttl        = "2m"
}

# The shop's frontend calls the orders service for signed-in users: it
# exchanges a user's token from the corp issuer, or a token of the checkout
# service, for one that names the user as subject and itself as actor.
policy "spiffe://example.org/ns/shop/sa/frontend" {
  audiences      = ["spiffe://example.org/ns/shop/sa/orders"]
  scopes         = ["orders:read", "orders:write"]
  default_scopes = ["orders:read"]
  max_ttl        = "5m"

  delegation {
    subjects      = ["spiffe://example.org/ns/shop/sa/checkout"] # SPIFFE ID patterns
    issuers       = ["corp"]                                     # external_issuer names
    max_depth     = 2                                            # actors in the act chain, at most; required
    impersonation = false                                        # default false
  }
}

# The batch jobs may read orders for longer, each at most 5 tokens a
# second (10 at once); over it they get 429 with Retry-After.
policy "spiffe://example.org/ns/batch/sa/*" {
  audiences      = ["https://api.example.org/orders"]
  scopes         = ["orders:read"]
  default_scopes = ["orders:read"]
  max_ttl        = "15m"

  rate_limit {
    rps   = 5
    burst = 10
  }
}

# The partner's billing service may call the billing API.
policy "spiffe://partner.example/billing" {
  audiences = ["https://api.example.org/billing"]
}
