// Command stsctl gets, inspects and verifies spiffe-sts access tokens, and
// loads a running server (bench).
//
// Get a token for this workload, exchanging its JWT-SVID (RFC 8693 §2.1)
// over mTLS with its X509-SVID, both from the Workload API:
//
//	stsctl exchange -sts https://sts.example.org:8443 -audience spiffe://example.org/api -scope "read write"
//
// Print the token response, or check the token as a resource server would
// (signature with the STS's JWKS, claims, and the RFC 8705 §3.1 binding to
// this workload's certificate):
//
//	stsctl exchange -sts https://sts.example.org:8443 -audience spiffe://example.org/api -output json
//	stsctl exchange -sts https://sts.example.org:8443 -audience spiffe://example.org/api -verify -output claims
//
// Decode a token without verifying it, showing its claims, act chain and
// binding:
//
//	stsctl exchange ... | stsctl inspect
//
// Verify a token offline against a JWKS and the certificate it is bound to:
//
//	stsctl verify -jwks jwks.json -cert svid.pem -issuer https://sts.example.org:8443 -audience spiffe://example.org/api < token
//
// Load a running spiffe-sts over mTLS (loopback only unless -allow-remote),
// closed loop or open loop at a fixed rate, and report throughput,
// latency percentiles, errors by OAuth code and, when bench starts the
// server pinned to a core, its CPU time per request and peak RSS:
//
//	stsctl bench -sts https://127.0.0.1:8443 -sts-id spiffe://example.org/sts -audience spiffe://example.org/api -grant jwt-svid -connections 8 -duration 10s
//	stsctl bench ... -rate 2000 -duration 30s -transport grpc
//
// Exit codes: 0 success; 1 the token was refused or is invalid (an OAuth
// error from the server, a verification failure, a malformed token);
// 2 usage error; 3 environment error (Workload API unreachable, network,
// files). Run 'stsctl <command> -h' for each command's flags.
//
// The raw token is written to stdout, and only by exchange -output token
// (and, inside the response, -output json); nothing secret goes to stderr.
package main
