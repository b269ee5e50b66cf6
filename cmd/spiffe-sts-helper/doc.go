// Command spiffe-sts-helper keeps an X509-SVID, its bundle and spiffe-sts
// access tokens bound to it (RFC 8705 §3.1) written as one set of files,
// for workloads in any language: curl, Python, Java, nginx. It is the
// token half that spiffe-helper lacks.
//
//	spiffe-sts-helper -config helper.hcl        run (exit 0 on SIGTERM, 1 on error, 2 on bad usage)
//	spiffe-sts-helper -config helper.hcl -healthcheck   exit 0 if the running helper is ready
//
// The configuration file (HCL; unknown keys are errors naming file, line
// and key; durations and modes are strings):
//
//	agent_address  = "unix:///run/spire/agent.sock" # else $SPIFFE_ENDPOINT_SOCKET
//	issuer_url     = "https://sts.example.org:8443" # required with token blocks
//	sts_spiffe_id  = "spiffe://example.org/sts"     # required with token blocks: the STS's SPIFFE ID
//	output_dir     = "/run/spiffe-sts"              # required; files are read through output_dir/current/
//	cert_file      = "svid.pem"                     # chain, leaf first
//	key_file       = "svid_key.pem"                 # PKCS#8
//	bundle_file    = "svid_bundle.pem"              # X.509 bundle of the trust domain
//	combined_file  = "proxy.pem"                    # optional: chain then key in one file (HAProxy crt)
//	file_mode      = "0600"                         # no access for others allowed
//	dir_mode       = "0700"                         # not group- or world-writable
//	daemon_mode    = true                           # false: write one set and exit 0 (init containers)
//	cmd            = "/usr/sbin/nginx"              # run on every update ...
//	cmd_args       = ["-s", "reload"]
//	cmd_timeout    = "30s"
//	pid_file_name  = "/run/app.pid"                 # ... and/or signal this process
//	renew_signal   = "SIGHUP"
//	listen         = "unix:///run/spiffe-sts/helper.sock" # or a loopback host:port only
//	health_address = "127.0.0.1:8081"               # /healthz, /readyz
//	timeout        = "10s"                          # per token request
//	log_level      = "info"
//	log_format     = "text"
//
//	token "orders.token" {                          # the label is the file name; none: SVID and bundle only
//	  audiences = ["spiffe://example.org/orders"]
//	  scopes    = ["orders.read"]
//	  grant     = "client_credentials"              # or "jwt_svid"
//	}
package main
