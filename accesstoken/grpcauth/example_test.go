package grpcauth_test

import (
	"context"
	"fmt"
	"net/http"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/accesstoken/grpcauth"
)

func ExampleUnaryServerInterceptor() {
	ctx := context.Background()
	src, err := workloadapi.NewX509Source(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer src.Close()
	stsID := spiffeid.RequireFromString("spiffe://example.org/sts")
	keys, err := accesstoken.NewRemoteKeySet(ctx, "https://sts.example.org/jwks", accesstoken.RemoteKeySetConfig{
		HTTPClient: &http.Client{Transport: &http.Transport{
			TLSClientConfig: tlsconfig.MTLSClientConfig(src, src, tlsconfig.AuthorizeID(stsID)),
		}},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	v := accesstoken.NewVerifier("https://sts.example.org", keys, &accesstoken.Config{
		Audiences: []string{"spiffe://example.org/api"},
	})
	// The transport must verify client certificates: the interceptors
	// compare the token's binding with the leaf it verified.
	td := spiffeid.RequireTrustDomainFromString("example.org")
	srv := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(tlsconfig.MTLSServerConfig(src, src, tlsconfig.AuthorizeMemberOf(td)))),
		grpc.ChainUnaryInterceptor(grpcauth.UnaryServerInterceptor(v,
			grpcauth.WithMethodScopes("/orders.Orders/Delete", "write"))),
		grpc.ChainStreamInterceptor(grpcauth.StreamServerInterceptor(v)),
	)
	_ = srv // register services, then srv.Serve(listener)
}
