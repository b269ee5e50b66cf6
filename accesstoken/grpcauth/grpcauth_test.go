package grpcauth_test

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/accesstoken/grpcauth"
	"github.com/spiffe-sts/spiffe-sts/internal/ststest"
)

const (
	apiID     = "spiffe://example.org/ns/prod/sa/api"
	checkRPC  = "/grpc.health.v1.Health/Check"
	watchRPC  = "/grpc.health.v1.Health/Watch"
	listRPC   = "/grpc.health.v1.Health/List"
	otherPeer = "spiffe://example.org/ns/prod/sa/other"
)

// observed records the claims handlers saw.
type observed struct {
	mu     sync.Mutex
	claims []*accesstoken.Claims
}

func (o *observed) add(ctx context.Context) {
	claims, _ := accesstoken.FromContext(ctx)
	o.mu.Lock()
	o.claims = append(o.claims, claims)
	o.mu.Unlock()
}

func (o *observed) last() *accesstoken.Claims {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.claims) == 0 {
		return nil
	}
	return o.claims[len(o.claims)-1]
}

// startServer runs the gRPC health service behind the interceptors on
// bufconn with mTLS from the test CA, and returns a dialer for clients
// presenting an SVID.
func startServer(t *testing.T, s *ststest.STS, v *accesstoken.Verifier, opts ...grpcauth.Option) (dial func(*x509svid.SVID) *grpc.ClientConn, seen *observed) {
	t.Helper()
	seen = &observed{}
	serverSVID := s.WorkloadSVID(t, apiID)
	srv := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(tlsconfig.MTLSServerConfig(serverSVID, s.CA.Bundle(), tlsconfig.AuthorizeMemberOf(s.CA.TrustDomain)))),
		grpc.ChainUnaryInterceptor(grpcauth.UnaryServerInterceptor(v, opts...),
			func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
				seen.add(ctx)
				return handler(ctx, req)
			}),
		grpc.ChainStreamInterceptor(grpcauth.StreamServerInterceptor(v, opts...),
			func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
				seen.add(ss.Context())
				return handler(srv, ss)
			}),
	)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	ln := bufconn.Listen(1 << 20)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	dial = func(svid *x509svid.SVID) *grpc.ClientConn {
		t.Helper()
		conn, err := grpc.NewClient("passthrough:///bufnet",
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return ln.DialContext(ctx) }),
			grpc.WithTransportCredentials(credentials.NewTLS(tlsconfig.MTLSClientConfig(svid, s.CA.Bundle(), tlsconfig.AuthorizeID(serverSVID.ID)))),
		)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		return conn
	}
	return dial, seen
}

func TestInterceptors(t *testing.T) {
	s := ststest.Start(t, nil)
	caller := s.WorkloadSVID(t, ststest.WorkloadID)
	other := s.WorkloadSVID(t, otherPeer)
	// sameIDOtherKey has the caller's SPIFFE ID but another certificate.
	sameIDOtherKey := s.CA.SVID(t, ststest.WorkloadID, time.Hour)

	baseline := func() ststest.BearerCall {
		p := ststest.NewBearerCall(caller, "read")
		p.Claims.Actor = &accesstoken.Actor{Subject: "spiffe://example.org/ns/prod/sa/gw"}
		return p
	}
	tests := []struct {
		name           string
		overrideParams func(*ststest.BearerCall)
		overrideConfig func(*accesstoken.Config)
		expectCode     codes.Code
		expectMsg      string
	}{
		{name: "baseline"},
		{name: "scheme is case-insensitive", overrideParams: func(p *ststest.BearerCall) { p.Header = func(tok string) string { return "bEaReR " + tok } }},
		{name: "missing token", overrideParams: func(p *ststest.BearerCall) { p.Header = func(string) string { return "" } },
			expectCode: codes.Unauthenticated, expectMsg: "missing bearer token"},
		{name: "another scheme", overrideParams: func(p *ststest.BearerCall) { p.Header = func(tok string) string { return "Basic " + tok } },
			expectCode: codes.Unauthenticated, expectMsg: "missing bearer token"},
		{name: "bearer without token", overrideParams: func(p *ststest.BearerCall) { p.Header = func(string) string { return "Bearer " } },
			expectCode: codes.Unauthenticated, expectMsg: "malformed bearer credentials"},
		{name: "not a token", overrideParams: func(p *ststest.BearerCall) { p.Header = func(string) string { return "Bearer abc" } },
			expectCode: codes.Unauthenticated, expectMsg: "invalid token: the token is malformed"},
		{name: "bound to another certificate of the same ID", overrideParams: func(p *ststest.BearerCall) { p.BoundTo = sameIDOtherKey },
			expectCode: codes.Unauthenticated, expectMsg: "invalid token: the token is not bound to the client certificate"},
		{name: "replayed by another workload", overrideParams: func(p *ststest.BearerCall) { p.Client = other },
			expectCode: codes.Unauthenticated, expectMsg: "invalid token: the token is not bound to the client certificate"},
		{name: "wrong audience", overrideParams: func(p *ststest.BearerCall) { p.Claims.Audience = accesstoken.Audience{ststest.OrdersResource} },
			expectCode: codes.Unauthenticated, expectMsg: "invalid token: the token is not for this resource server"},
		{name: "expired", overrideConfig: func(c *accesstoken.Config) { c.Now = func() time.Time { return time.Now().Add(time.Hour) } },
			expectCode: codes.Unauthenticated, expectMsg: "invalid token: the token has expired"},
		{name: "missing scope", overrideParams: func(p *ststest.BearerCall) { p.Claims.Scope = "write admin" },
			expectCode: codes.PermissionDenied, expectMsg: "insufficient scope: missing read"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := baseline()
			if tt.overrideParams != nil {
				tt.overrideParams(&p)
			}
			v := s.VerifierWith(ststest.APIAudience, tt.overrideConfig)
			dial, seen := startServer(t, s, v,
				grpcauth.WithMethodScopes(checkRPC, "read"),
				grpcauth.WithMethodScopes(watchRPC, "read"))
			client := healthpb.NewHealthClient(dial(p.Client))
			token := s.Mint(t, p.Claims, p.BoundTo)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if h := p.Header(token); h != "" {
				ctx = metadata.AppendToOutgoingContext(ctx, "authorization", h)
			}

			check := func(t *testing.T, err error) {
				t.Helper()
				if got := status.Code(err); got != tt.expectCode {
					t.Fatalf("code = %v (%v), want %v", got, err, tt.expectCode)
				}
				if tt.expectCode != codes.OK {
					if msg := status.Convert(err).Message(); msg != tt.expectMsg {
						t.Fatalf("message = %q, want %q", msg, tt.expectMsg)
					}
					checkRefusal(t, err)
					if strings.Contains(err.Error(), token) {
						t.Fatal("the error echoes the token")
					}
					return
				}
				claims := seen.last()
				if claims == nil || claims.Subject != ststest.WorkloadID || !claims.HasScope("read") ||
					strings.Join(claims.ActorChain(), ",") != "spiffe://example.org/ns/prod/sa/gw" {
					t.Fatalf("handler saw claims %+v", claims)
				}
			}
			t.Run("unary", func(t *testing.T) {
				_, err := client.Check(ctx, &healthpb.HealthCheckRequest{})
				check(t, err)
			})
			t.Run("stream", func(t *testing.T) {
				sctx, cancel := context.WithCancel(ctx)
				defer cancel()
				stream, err := client.Watch(sctx, &healthpb.HealthCheckRequest{})
				if err == nil {
					_, err = stream.Recv()
				}
				check(t, err)
			})
		})
	}
}

// TestMethodScopes checks that scopes apply per method and add up.
func TestMethodScopes(t *testing.T) {
	s := ststest.Start(t, nil)
	caller := s.WorkloadSVID(t, ststest.WorkloadID)
	v := accesstoken.NewVerifier(s.URL, s.Issuer.KeySet(), &accesstoken.Config{Audiences: []string{ststest.APIAudience}})
	dial, _ := startServer(t, s, v,
		grpcauth.WithMethodScopes(checkRPC, "read"),
		grpcauth.WithMethodScopes(checkRPC, "write"),
		grpcauth.WithMethodScopes(listRPC, "admin"))
	client := healthpb.NewHealthClient(dial(caller))
	tests := []struct {
		name       string
		scope      string
		call       func(context.Context) error
		expectCode codes.Code
		expectMsg  string
	}{
		{name: "all scopes", scope: "read write", call: func(ctx context.Context) error {
			_, err := client.Check(ctx, &healthpb.HealthCheckRequest{})
			return err
		}},
		{name: "one of two scopes", scope: "write", call: func(ctx context.Context) error {
			_, err := client.Check(ctx, &healthpb.HealthCheckRequest{})
			return err
		}, expectCode: codes.PermissionDenied, expectMsg: "insufficient scope: missing read"},
		{name: "no scopes", call: func(ctx context.Context) error {
			_, err := client.Check(ctx, &healthpb.HealthCheckRequest{})
			return err
		}, expectCode: codes.PermissionDenied, expectMsg: "insufficient scope: missing read write"},
		{name: "method without scopes", call: func(ctx context.Context) error {
			stream, err := client.Watch(ctx, &healthpb.HealthCheckRequest{})
			if err == nil {
				_, err = stream.Recv()
			}
			return err
		}},
		{name: "other method's scopes", scope: "read write", call: func(ctx context.Context) error {
			_, err := client.List(ctx, &healthpb.HealthListRequest{})
			return err
		}, expectCode: codes.PermissionDenied, expectMsg: "insufficient scope: missing admin"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			token := s.Mint(t, accesstoken.Claims{Subject: ststest.WorkloadID, ClientID: ststest.WorkloadID,
				Audience: accesstoken.Audience{ststest.APIAudience}, Scope: tt.scope}, caller)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			err := tt.call(metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token))
			if got := status.Code(err); got != tt.expectCode {
				t.Fatalf("code = %v (%v), want %v", got, err, tt.expectCode)
			}
			if tt.expectCode != codes.OK && status.Convert(err).Message() != tt.expectMsg {
				t.Fatalf("message = %q, want %q", status.Convert(err).Message(), tt.expectMsg)
			}
		})
	}
}

// TestNoTransportSecurity checks that a call without a client certificate
// is refused even with a valid token.
func TestNoTransportSecurity(t *testing.T) {
	s := ststest.Start(t, nil)
	caller := s.WorkloadSVID(t, ststest.WorkloadID)
	v := accesstoken.NewVerifier(s.URL, s.Issuer.KeySet(), &accesstoken.Config{Audiences: []string{ststest.APIAudience}})
	token := s.Mint(t, accesstoken.Claims{Subject: ststest.WorkloadID, ClientID: ststest.WorkloadID,
		Audience: accesstoken.Audience{ststest.APIAudience}}, caller)
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+token))
	_, err := grpcauth.UnaryServerInterceptor(v)(ctx, nil, &grpc.UnaryServerInfo{FullMethod: checkRPC},
		func(context.Context, any) (any, error) { t.Fatal("handler called"); return nil, nil })
	checkRefusal(t, err)
	if status.Code(err) != codes.Unauthenticated || status.Convert(err).Message() != "invalid token: no verified client certificate" {
		t.Fatalf("err = %v", err)
	}
}

func TestWithMethodScopesRejectsInvalidScope(t *testing.T) {
	defer func() {
		if r := recover(); r != `grpcauth: invalid scope "a\"b" for /x/y` {
			t.Fatalf("recovered %v", r)
		}
	}()
	grpcauth.WithMethodScopes("/x/y", `a"b`)
}
