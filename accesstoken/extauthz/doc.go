// Package extauthz is an Envoy external authorization service
// (envoy.service.auth.v3.Authorization/Check) that checks spiffe-sts
// access tokens bound to the downstream client's X.509-SVID, so that a
// service behind Envoy or Istio (a CUSTOM AuthorizationPolicy) gets
// bound-token checks without code.
//
// Envoy terminates mTLS and, with the ext_authz filter's
// include_peer_certificate, passes the client certificate to Check. The
// service verifies it as an X509-SVID against the bundles, verifies the
// bearer token (signature, claims, and that "cnf" is that certificate's
// thumbprint, RFC 8705 §3.1) and lets the request through with the
// verified identity in x-spiffe-sts-subject, x-spiffe-sts-client-id,
// x-spiffe-sts-act and x-spiffe-sts-scope, replacing any such header the
// client sent. Refusals are RFC 6750 §3 challenges that tell a bad token
// from one bound to another certificate.
//
//	srv, err := extauthz.New(extauthz.Config{
//		Verifier: accesstoken.NewVerifier(stsURL, keys, &accesstoken.Config{
//			Audiences: []string{"spiffe://example.org/orders"},
//		}),
//		Bundles: bundles,
//		Scopes:  []string{"orders.read"},
//	})
//	...
//	g := grpc.NewServer(grpc.Creds(grpccredentials.MTLSServerCredentials(svids, bundles,
//		tlsconfig.AuthorizeID(envoyID))))
//	srv.Register(g)
//
// Serve it over mTLS that admits only the Envoy (or a Unix socket next
// to it): an allowed Check is what lets a request through. deploy/envoy
// has an Envoy configuration and an Istio AuthorizationPolicy. The
// package logs nothing.
package extauthz
