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
//	if errors.Is(err, protocol.ErrInvalidTarget) {
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
// the certificate it was issued for: Exchange alone leaves rotation to the
// caller; Tokens handles it.
//
// # HTTP or gRPC
//
// By default requests go to the HTTP token endpoint. WithGRPC sends them
// to the STS's gRPC API (exchangepb.TokenExchange) on the same listener
// instead, over the same mTLS; results and refusals are the same, a
// protocol.Error either way:
//
//	client, err := exchangeclient.New(ctx,
//		exchangeclient.WithIssuerURL("https://sts.example.org:8443"),
//		exchangeclient.WithGRPC(),
//	)
//
// Tokens keeps one STS connection per client certificate over gRPC as
// over HTTP, so every token is requested presenting the certificate it is
// bound to.
//
// # Tokens across SVID rotation
//
// Client.NewTokens keeps the tokens of one Request, one per client
// certificate, and refreshes them in the background when two thirds of
// their lifetime have passed, so a call waits for the STS only when no
// usable token is kept. When SPIRE rotates the X509-SVID (at half-life),
// Tokens notices (through the source's Updated channel, else within a
// second) and at once obtains a token bound to the new certificate by
// re-binding the current one: an RFC 8693 exchange of the current token
// (subject_token_type urn:ietf:params:oauth:token-type:access_token) over
// a connection presenting the new certificate, which keeps the grant
// (audience, scope, act) and its expiry. If the STS refuses, Tokens uses
// the original grant. Tokens bound to older certificates are kept until
// those expire. WithEvents reports all of it.
//
// For gRPC, TransportCredentials make each connection present the current
// SVID and record it; PerRPCCredentials attach to each call the token
// bound to the certificate of the call's connection:
//
//	tokens, err := client.NewTokens(ctx, exchangeclient.Request{
//		Audience: []string{"spiffe://example.org/api"},
//		Scope:    []string{"read"},
//	})
//	if err != nil {
//		return err // a protocol.Error when the STS refused
//	}
//	defer tokens.Close()
//	api := spiffeid.RequireFromString("spiffe://example.org/api")
//	conn, err := grpc.NewClient("api.example.org:443",
//		grpc.WithTransportCredentials(tokens.TransportCredentials(tlsconfig.AuthorizeID(api))),
//		grpc.WithPerRPCCredentials(tokens.PerRPCCredentials()),
//	)
//
// For HTTP, RoundTripper keeps one transport per client certificate and
// sends each request with the token bound to the certificate of its
// transport:
//
//	hc := &http.Client{Transport: tokens.RoundTripper(tlsconfig.AuthorizeID(api))}
//	resp, err := hc.Get("https://api.example.org/orders")
//
// With a JWT-SVID subject token, give WithSubjectTokenFunc so that Tokens
// can fetch a fresh one for each refresh; client_credentials (no subject
// token) needs nothing more.
//
// # Long-lived connections
//
// A gRPC or HTTP connection keeps the certificate it was established with
// for its whole life. Calls on it carry tokens bound to that certificate,
// which Tokens keeps refreshing, over STS connections presenting that
// certificate, while the connection is used, until the certificate
// expires. After that no token can be bound to it (the STS caps exp at the
// certificate's NotAfter, RFC 8705 §3), and calls on the connection fail
// with ErrCertificateExpired, so such a connection must be replaced
// before then. Servers should bound the age of connections below the
// SVID's remaining life at rotation, which is about half the X509-SVID
// TTL: for gRPC set keepalive.ServerParameters{MaxConnectionAge,
// MaxConnectionAgeGrace}; gRPC clients then reconnect on GOAWAY, with the
// new certificate and its token, and no call fails. HTTP servers should
// likewise close old connections (or idle ones, with IdleTimeout). The
// RoundTripper moves new requests to the new certificate's transport as
// soon as the rotation's token request has been tried (normally one STS
// round trip), so only requests already in flight use the old one.
//
// Right after a rotation, until that first token request for the new
// certificate ends, new connections still present the previous
// certificate, which is valid and has a token, so no call waits.
//
// # Behind an egress sidecar
//
// A workload whose sidecar originates mTLS with the workload's SVID never
// holds the certificate. WithSidecar sends token requests and, through
// Tokens.RoundTripper, resource calls in plain HTTP to the sidecar on
// loopback or a Unix socket; the STS binds tokens to the sidecar's
// certificate. When that rotates, a resource server refuses the token
// with refusal="binding_mismatch" (accesstoken.ParseChallenge), and the
// RoundTripper re-binds once and retries once:
//
//	client, err := exchangeclient.New(ctx,
//		exchangeclient.WithIssuerURL("https://sts.example.org:8443"),
//		exchangeclient.WithSidecar("unix:///run/egress/http.sock"))
//	...
//	tokens, err := client.NewTokens(ctx, exchangeclient.Request{Audience: []string{api.String()}})
//	hc := &http.Client{Transport: tokens.RoundTripper(nil)}
//	resp, err := hc.Get("https://api.example.org/orders")
//
// gRPC calls go to the sidecar as HTTP/2 in clear text (h2c), the target
// naming the destination in :authority, with the options of
// Tokens.GRPCDialOptions, which a program uses in either mode (without
// WithSidecar they are TransportCredentials and PerRPCCredentials):
//
//	conn, err := grpc.NewClient("api.example.org:443", tokens.GRPCDialOptions(nil)...)
//
// A call refused with codes.Unauthenticated and the ErrorInfo of a
// binding mismatch (grpcauth.RefusalOf is
// accesstoken.RefusalBindingMismatch) makes the client re-bind once,
// shared with concurrent callers, and make the call again once; a
// bad_token refusal is returned as it is. A stream is made again only
// when it was refused before any message was received, with the messages
// sent so far (up to 16) sent again.
//
// The server's refusals are protocol.Error values (RFC 6749 §5.2, RFC 8693
// §2.2.2); compare them with errors.Is against the exchange sentinels.
// The package logs nothing.
package exchangeclient
