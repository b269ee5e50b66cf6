// Package grpcauth is gRPC server middleware that admits calls carrying a
// valid spiffe-sts access token bound to the caller's X.509-SVID.
//
// The token travels in the "authorization" metadata as "Bearer <token>"
// (RFC 6750 §2.1; the scheme is matched case-insensitively). The
// interceptors verify it with an accesstoken.Verifier against the leaf
// certificate of the call's connection (RFC 8705 §3.1), which they read with
// stsid.PeerFromContext, and store the verified claims in the context:
//
//	v := accesstoken.NewVerifier(stsURL, keys, &accesstoken.Config{
//		Audiences: []string{"spiffe://example.org/api"},
//	})
//	srv := grpc.NewServer(
//		grpc.Creds(credentials.NewTLS(tlsconfig.MTLSServerConfig(svids, bundles, tlsconfig.AuthorizeMemberOf(td)))),
//		grpc.ChainUnaryInterceptor(grpcauth.UnaryServerInterceptor(v,
//			grpcauth.WithMethodScopes("/orders.Orders/Delete", "write"))),
//		grpc.ChainStreamInterceptor(grpcauth.StreamServerInterceptor(v)),
//	)
//
// and in a handler:
//
//	claims, _ := accesstoken.FromContext(ctx)
//	log.Printf("%s for %v", claims.Subject, claims.ActorChain())
//
// The server's transport credentials must require and verify client
// certificates: credentials.NewTLS with go-spiffe's
// tlsconfig.MTLSServerConfig as above, or go-spiffe's
// grpccredentials.MTLSServerCredentials. The interceptors trust the peer
// chain as verified by the transport and only compare the token's binding
// with its leaf.
//
// A missing, malformed, expired or unbound token, or a connection without a
// client certificate, fails the call with codes.Unauthenticated; a valid
// token lacking a scope that WithMethodScopes requires fails with
// codes.PermissionDenied. Status messages say what is wrong without
// echoing the token. The package logs nothing.
package grpcauth
