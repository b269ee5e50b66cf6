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

issuer {
  signing_algorithm = "ES256" # ES256, EdDSA or RS256
  default_ttl       = "5m"    # for policy rules without max_ttl
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

# The batch jobs may read orders for longer.
policy "spiffe://example.org/ns/batch/sa/*" {
  audiences      = ["https://api.example.org/orders"]
  scopes         = ["orders:read"]
  default_scopes = ["orders:read"]
  max_ttl        = "15m"
}

# The partner's billing service may call the billing API.
policy "spiffe://partner.example/billing" {
  audiences = ["https://api.example.org/billing"]
}
