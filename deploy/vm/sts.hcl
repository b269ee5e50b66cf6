# spiffe-sts configuration for a VM, installed as /etc/spiffe-sts/sts.hcl.
# Check it with: spiffe-sts validate -config /etc/spiffe-sts/sts.hcl
# After editing policy blocks: systemctl reload spiffe-sts. Changes to the
# server, issuer or datastore blocks need: systemctl restart spiffe-sts.

server {
  # The trust domain of the SPIRE server that registered spiffe-sts.
  trust_domain = "example.org"

  # The name clients and resource servers use to reach this host; it is the
  # "iss" claim of every token. Register it as a DNS name of the SVID
  # (register.sh) so that host name verification succeeds.
  issuer_url = "https://sts.example.org:8443"

  bind_address = "0.0.0.0:8443"

  # StateDirectory=spiffe-sts of the systemd unit. The signing-key ring
  # lives in keyring.json here (mode 0600); key files of older versions in
  # keys/ are imported into it on first start and left in place.
  data_dir = "/var/lib/spiffe-sts"

  # Cache-Control max-age of /jwks and the metadata documents.
  jwks_max_age = "5m"

  # The SPIRE agent's Workload API (agent.conf socket_path). It must not be
  # under /tmp: the unit has PrivateTmp=yes.
  workload_api_socket = "unix:///run/spire/agent/public/api.sock"

  # Plain HTTP health endpoints for a load balancer or monitoring; bind
  # them to an interface the checker reaches.
  health_address = "127.0.0.1:8081"

  log_level  = "info"
  log_format = "json" # journald keeps one JSON object per line
}

issuer {
  signing_algorithm = "ES256"
  default_ttl       = "5m"

  # A new key is published for publication_window (default twice
  # jwks_max_age) before it signs, and signs for rotation_period.
  # List, rotate and revoke keys with: spiffe-sts keys list -config FILE
  rotation_period    = "24h"
  publication_window = "10m"
}

# One node: the key ring is a file under data_dir, no server to run. This
# block is the default and may be left out. Set key_encryption_key_file (32
# bytes, raw or base64, mode 0600) to encrypt the keys in the file too.
datastore "embedded" {
}

# First matching rule wins; a caller no rule matches is denied.

# The billing service on the app VMs may call the ledger API.
policy "spiffe://example.org/vm/billing" {
  audiences      = ["https://ledger.example.org"]
  scopes         = ["ledger:read", "ledger:write"]
  default_scopes = ["ledger:read"]
  max_ttl        = "5m"
}

# The report jobs may read the ledger for longer.
policy "spiffe://example.org/vm/reports/*" {
  audiences      = ["https://ledger.example.org"]
  scopes         = ["ledger:read"]
  default_scopes = ["ledger:read"]
  max_ttl        = "15m"
}
