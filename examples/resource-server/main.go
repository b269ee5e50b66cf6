// Command resource-server is an example resource server protected by
// spiffe-sts tokens. It gets its X509-SVID from the Workload API, fetches
// the STS's JWKS over mTLS, and serves, over mTLS:
//
//   - gRPC (-grpc-addr): the standard health service, behind
//     accesstoken/grpcauth, with MaxConnectionAge so that client
//     connections are renewed gracefully and pick up rotated SVIDs;
//   - HTTPS (-http-addr): GET /orders, behind accesstoken/httpauth,
//     answering with the verified claims, and GET /stats (no token): the
//     number of accepted calls and of binding mismatches seen after
//     verification (always 0 unless the verifier is broken).
//
// Every accepted call is re-checked after the middleware: the token's cnf
// must equal the thumbprint of the certificate of the connection it came
// on, or, behind a trusted proxy (-trusted-proxies, -forwarded-format),
// of the client certificate the proxy forwarded. The integration tests
// and the demo use it.
//
//	resource-server -grpc-addr 127.0.0.1:9443 -http-addr 127.0.0.1:9444 -sts https://127.0.0.1:8443 -sts-id spiffe://example.org/sts -audience spiffe://example.org/api
package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/accesstoken/grpcauth"
	"github.com/spiffe-sts/spiffe-sts/accesstoken/httpauth"
	stsid "github.com/spiffe-sts/spiffe-sts/spiffeid"
	"github.com/spiffe-sts/spiffe-sts/spiffeid/forwarded"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "resource-server:", err)
		os.Exit(1)
	}
}

// stats counts accepted calls and binding mismatches.
type stats struct {
	Accepted   atomic.Int64
	Mismatches atomic.Int64
}

func (s *stats) record(claims *accesstoken.Claims, leaf *x509.Certificate) {
	if leaf == nil || !accesstoken.BoundTo(claims, leaf) {
		s.Mismatches.Add(1)
		return
	}
	s.Accepted.Add(1)
}

func run() error {
	grpcAddr := flag.String("grpc-addr", "127.0.0.1:9443", "gRPC listen `address`")
	httpAddr := flag.String("http-addr", "127.0.0.1:9444", "HTTPS listen `address`")
	stsURL := flag.String("sts", "", "STS issuer `URL` (required)")
	stsIDFlag := flag.String("sts-id", "", "SPIFFE ID of the STS (required)")
	audience := flag.String("audience", "", "this resource server's audience (required)")
	scope := flag.String("scope", "", "scope required for /orders and gRPC calls (optional)")
	trustedProxies := flag.String("trusted-proxies", "", "comma-separated SPIFFE ID `patterns` of the proxies allowed to forward a client certificate (optional)")
	forwardedFormat := flag.String("forwarded-format", "client-cert", "with -trusted-proxies: how they forward it, `xfcc` (Envoy) or client-cert (RFC 9440)")
	maxConnAge := flag.Duration("max-connection-age", 2*time.Second, "gRPC MaxConnectionAge: connections are renewed (gracefully) at least this often, so they pick up rotated SVIDs")
	flag.Parse()
	if *stsURL == "" || *stsIDFlag == "" || *audience == "" {
		flag.Usage()
		return errors.New("-sts, -sts-id and -audience are required")
	}
	stsID, err := spiffeid.FromString(*stsIDFlag)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	waitCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	src, err := workloadapi.NewX509Source(waitCtx)
	if err != nil {
		return fmt.Errorf("X509-SVID from the Workload API: %w", err)
	}
	defer src.Close()
	keys, err := accesstoken.NewRemoteKeySet(waitCtx, *stsURL+"/jwks", accesstoken.RemoteKeySetConfig{
		HTTPClient: &http.Client{
			Transport: &http.Transport{TLSClientConfig: tlsconfig.MTLSClientConfig(src, src, tlsconfig.AuthorizeID(stsID))},
			Timeout:   10 * time.Second,
		},
	})
	if err != nil {
		return fmt.Errorf("JWKS: %w", err)
	}
	verifier := accesstoken.NewVerifier(*stsURL, keys, &accesstoken.Config{Audiences: []string{*audience}})
	var st stats

	// Clients of any trust domain the bundle source knows may connect; the
	// tokens decide what they may do.
	tlsConf := tlsconfig.MTLSServerConfig(src, src, tlsconfig.AuthorizeAny())

	var grpcOpts []grpcauth.Option
	var httpOpts []httpauth.Option
	if *scope != "" {
		grpcOpts = append(grpcOpts, grpcauth.WithMethodScopes(healthpb.Health_Check_FullMethodName, *scope))
		httpOpts = append(httpOpts, httpauth.WithScopes(*scope))
	}
	proxies, err := proxyPolicy(*trustedProxies, *forwardedFormat, src)
	if err != nil {
		return err
	}
	// clientLeaf is the certificate a request's token must be bound to:
	// the connection's, or the one a trusted proxy forwarded.
	clientLeaf := func(r *http.Request) *x509.Certificate { return r.TLS.PeerCertificates[0] }
	if proxies != nil {
		grpcOpts = append(grpcOpts, grpcauth.WithTrustedProxies(proxies))
		httpOpts = append(httpOpts, httpauth.WithTrustedProxies(proxies))
		clientLeaf = func(r *http.Request) *x509.Certificate {
			res, err := proxies.Client(forwarded.HopFromRequest(r), r.Header)
			if err != nil {
				return nil // counted as a mismatch: the middleware let it through
			}
			return res.Client.Leaf
		}
	}
	recordGRPC := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		claims, _ := accesstoken.FromContext(ctx)
		peer, _ := stsid.PeerFromContext(ctx)
		if claims != nil {
			st.record(claims, peer.Leaf)
		}
		return handler(ctx, req)
	}
	grpcServer := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(tlsConf)),
		grpc.ChainUnaryInterceptor(grpcauth.UnaryServerInterceptor(verifier, grpcOpts...), recordGRPC),
		grpc.StreamInterceptor(grpcauth.StreamServerInterceptor(verifier, grpcOpts...)),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionAge: *maxConnAge, MaxConnectionAgeGrace: 5 * time.Second}),
	)
	healthpb.RegisterHealthServer(grpcServer, health.NewServer())

	mux := http.NewServeMux()
	mux.Handle("GET /orders", httpauth.Middleware(verifier, httpOpts...)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		claims, _ := accesstoken.FromContext(r.Context())
		st.record(claims, clientLeaf(r))
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"orders": []string{"order-1", "order-2"}, "subject": claims.Subject, "client_id": claims.ClientID,
			"scope": claims.Scope, "act": claims.ActorChain(),
		})
	})))
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]int64{"accepted": st.Accepted.Load(), "binding_mismatches": st.Mismatches.Load()})
	})

	grpcLn, err := net.Listen("tcp", *grpcAddr)
	if err != nil {
		return err
	}
	httpLn, err := net.Listen("tcp", *httpAddr)
	if err != nil {
		return err
	}
	server := &http.Server{Handler: mux, TLSConfig: tlsConf, ReadHeaderTimeout: 10 * time.Second}
	fmt.Printf("resource-server: gRPC on %s, HTTPS on %s, audience %s\n", grpcLn.Addr(), httpLn.Addr(), *audience)
	errc := make(chan error, 2)
	go func() { errc <- grpcServer.Serve(grpcLn) }()
	go func() { errc <- server.ServeTLS(httpLn, "", "") }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	grpcServer.GracefulStop()
	shutdownCtx, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	return server.Shutdown(shutdownCtx)
}

// proxyPolicy is the trusted-proxy policy of the flags; nil without
// -trusted-proxies.
func proxyPolicy(patterns, format string, bundles x509bundle.Source) (*forwarded.Policy, error) {
	if patterns == "" {
		return nil, nil
	}
	f, err := forwarded.ParseFormat(format)
	if err != nil {
		return nil, fmt.Errorf("-forwarded-format: %w", err)
	}
	var trusted []stsid.Pattern
	for _, s := range strings.Split(patterns, ",") {
		p, err := stsid.ParsePattern(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("-trusted-proxies: %w", err)
		}
		trusted = append(trusted, p)
	}
	return forwarded.New(forwarded.Config{Format: f, TrustedProxies: trusted, Bundles: bundles})
}
