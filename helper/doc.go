// Package helper is the loop of spiffe-sts-helper: it keeps an X509-SVID,
// its bundle and access tokens bound to it (RFC 8705 §3.1) written as one
// versioned set of files, for workloads in any language.
//
// The parts are kept apart: the Workload API watcher is an X509Source
// (a go-spiffe workloadapi.X509Source), the tokens come from
// exchange/exchangeclient, the files are written by a Writer
// (helper/atomicdir), and the program using them is told by OnUpdate.
//
// On every X509-SVID rotation the helper obtains each token for the new
// certificate before the swap: it re-binds the current token (RFC 8693
// §2.1, subject_token_type urn:ietf:params:oauth:token-type:access_token,
// over mTLS with the new SVID) and falls back to the original grant. It
// refreshes a token with the grant once two thirds of its lifetime have
// passed, the client library's policy. A failed attempt is retried with
// backoff while the current set stays written; a certificate is never
// written without its tokens.
//
//	h, err := helper.New(helper.Config{
//		Source:    x509Source,
//		IssuerURL: "https://sts.example.org:8443",
//		STSID:     spiffeid.RequireFromString("spiffe://example.org/sts"),
//		Tokens:    []helper.TokenSpec{{Name: "orders.token", Audience: []string{"spiffe://example.org/orders"}}},
//		Files:     helper.FileNames{Cert: "svid.pem", Key: "svid_key.pem", Bundle: "bundle.pem"},
//		Writer:    writer, // atomicdir.New(outputDir, atomicdir.Options{})
//	})
//	...
//	err = h.Run(ctx)
package helper
