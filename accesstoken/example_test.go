package accesstoken_test

import (
	"context"
	"fmt"
	"net/http"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
)

func ExampleNewRemoteKeySet() {
	ctx := context.Background()
	// The resource server's own X509-SVID and trust bundle, for example
	// both from a workloadapi.X509Source.
	var (
		svids   x509svid.Source
		bundles x509bundle.Source
	)
	stsID := spiffeid.RequireFromString("spiffe://example.org/sts")
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig: tlsconfig.MTLSClientConfig(svids, bundles, tlsconfig.AuthorizeID(stsID)),
	}}
	// Blocks until the first fetch is done.
	keys, err := accesstoken.NewRemoteKeySet(ctx, "https://sts.example.org/jwks", accesstoken.RemoteKeySetConfig{HTTPClient: client})
	if err != nil {
		fmt.Println(err)
		return
	}
	v := accesstoken.NewVerifier("https://sts.example.org", keys, &accesstoken.Config{
		Audiences: []string{"spiffe://example.org/api"},
	})
	_ = v // v.Verify(ctx, raw, r.TLS.PeerCertificates[0])
}

func ExampleClaims_ActorChain() {
	// A token for web, obtained by gateway acting for web, then exchanged
	// by batch acting for gateway (RFC 8693 §4.1).
	claims := &accesstoken.Claims{
		Subject: "spiffe://example.org/web",
		Actor: &accesstoken.Actor{
			Subject: "spiffe://example.org/batch",
			Actor:   &accesstoken.Actor{Subject: "spiffe://example.org/gateway"},
		},
	}
	fmt.Println(claims.ActorChain())
	// Output: [spiffe://example.org/batch spiffe://example.org/gateway]
}

func ExampleFromContext() {
	// Middleware stores the verified claims...
	ctx := accesstoken.NewContext(context.Background(), &accesstoken.Claims{
		Subject: "spiffe://example.org/web",
		Scope:   "read write",
	})
	// ...and handlers read them.
	if claims, ok := accesstoken.FromContext(ctx); ok {
		fmt.Println(claims.Subject, claims.Scopes())
	}
	// Output: spiffe://example.org/web [read write]
}
