// Package forwarded reads the client certificate that a trusted proxy
// forwards in a request header, for servers behind a proxy or sidecar
// that terminates mTLS: the certificate a bound token's "cnf" names
// (RFC 8705 §3.1) is then the client's, held by the proxy, and not the
// proxy's own.
//
// A forwarding header is believed only from a hop that is itself
// authenticated as a proxy: an mTLS peer whose X509-SVID matches one of
// Config.TrustedProxies, or, when the operator opts in with
// Config.TrustUnixSocket, any hop on a Unix socket listener (a sidecar in
// the same pod). From any other hop the header is refused, and such a
// request is never served as the hop itself. A trusted proxy that
// forwards nothing is refused too, so a proxy that forgot to forward does
// not become the client.
//
// One format is accepted per deployment:
//
//   - FormatXFCC, Envoy's x-forwarded-client-cert: the element the
//     immediate proxy appended, the last one, and its Cert= (URL-encoded
//     PEM) and Chain=. Hash= is checked when present but never used in
//     place of the certificate. Configure Envoy with
//     forward_client_cert_details SANITIZE_SET (or APPEND_FORWARD) and
//     set_current_client_cert_details cert: true; FORWARD_ONLY and
//     ALWAYS_FORWARD_ONLY pass on what the client sent (see
//     Config.XFCCRequireBy).
//   - FormatClientCert, RFC 9440 Client-Cert (a structured-field Byte
//     Sequence of the DER certificate) with optional Client-Cert-Chain.
//
// The forwarded certificate is verified as an X509-SVID against the
// bundles exactly like a direct peer, with stsid.VerifyPeer: chain, one
// URI SAN, leaf not a CA, validity.
//
//	policy, err := forwarded.New(forwarded.Config{
//		Format:         forwarded.FormatXFCC,
//		TrustedProxies: []stsid.Pattern{stsid.RequirePattern("spiffe://example.org/ns/edge/sa/envoy")},
//		Bundles:        bundles,
//	})
//	...
//	res, err := policy.Client(forwarded.HopFromRequest(r), r.Header)
//	if err != nil {
//		// invalid_client / invalid_token, with forwarded.Describe(err)
//	}
//	// res.Client is the identity to serve, res.Proxy the proxy for audit.
//
// The package returns errors and logs nothing.
package forwarded
