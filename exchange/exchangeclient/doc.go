// Package exchangeclient is the workload side of spiffe-sts: it asks the
// token endpoint for an RFC 9068 JWT access token, authenticating over
// mTLS with the workload's X509-SVID (RFC 8705 §2 tls_client_auth), so
// the token comes back bound to that certificate (RFC 8705 §3.1).
//
// A token is requested either by exchanging a subject token, normally a
// JWT-SVID addressed to the STS (RFC 8693 §2.1), or, with no subject token,
// with the client_credentials grant for the workload's own SPIFFE ID
// (RFC 6749 §4.4).
//
// Usage, with the SVID from the SPIRE Workload API at
// SPIFFE_ENDPOINT_SOCKET:
//
//	client, err := exchangeclient.New(ctx,
//		exchangeclient.WithIssuerURL("https://sts.example.org:8443"),
//		exchangeclient.WithServerID(spiffeid.RequireFromString("spiffe://example.org/sts")),
//	)
//	if err != nil {
//		return err
//	}
//	defer client.Close()
//
//	tok, err := client.Exchange(ctx, exchangeclient.Request{
//		SubjectToken: jwtSVID, // audience: the issuer URL
//		Audience:     []string{"spiffe://example.org/api"},
//		Scope:        []string{"read"},
//	})
//	if errors.Is(err, exchange.ErrInvalidTarget) {
//		return fmt.Errorf("the STS policy does not allow this audience: %w", err)
//	} else if err != nil {
//		return err
//	}
//	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
//
// A process that already has a workloadapi.X509Source passes it with
// WithX509Source; the client then uses it without closing it. The TLS
// configuration reads the SVID from the source on every handshake, so new
// connections present the rotated SVID. A bound token is only usable with
// the certificate it was issued for: request a new one after rotation.
//
// The server's refusals are exchange.Error values (RFC 6749 §5.2, RFC 8693
// §2.2.2); compare them with errors.Is against the exchange sentinels.
// The package logs nothing.
package exchangeclient
