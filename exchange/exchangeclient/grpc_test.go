package exchangeclient_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/exchange/exchangeclient"
	"github.com/spiffe-sts/spiffe-sts/internal/ststest"
)

// apiID is the resource server's SPIFFE ID, which is also the token
// audience.
var apiID = spiffeid.RequireFromString(ststest.APIAudience)

// resourceServer checks calls the way a resource server does: the token
// must verify and be bound to the client certificate of the call's
// connection (RFC 8705 §3). It counts accepted calls per certificate.
type resourceServer struct {
	verifier *accesstoken.Verifier

	mu      sync.Mutex
	calls   map[string]int // by x5t#S256 of the client certificate
	refused []string
	// accepted is closed, and replaced, when a call is accepted.
	accepted chan struct{}
}

func newResourceServer(s *ststest.STS) *resourceServer {
	return &resourceServer{verifier: s.Verifier(ststest.APIAudience), calls: map[string]int{}, accepted: make(chan struct{})}
}

func (rs *resourceServer) check(ctx context.Context, authorization []string, peerCerts []*x509.Certificate) error {
	err := func() error {
		if len(peerCerts) == 0 {
			return errors.New("no client certificate")
		}
		if len(authorization) != 1 {
			return errors.New("want one authorization value")
		}
		tok, ok := strings.CutPrefix(authorization[0], "Bearer ")
		if !ok {
			return errors.New("not a bearer token")
		}
		_, err := rs.verifier.Verify(ctx, tok, peerCerts[0])
		return err
	}()
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if err != nil {
		rs.refused = append(rs.refused, err.Error())
		return err
	}
	rs.calls[accesstoken.Thumbprint(peerCerts[0])]++
	close(rs.accepted)
	rs.accepted = make(chan struct{})
	return nil
}

// waitCert waits until rs has accepted a call made with leaf, failing the
// test after timeout.
func (rs *resourceServer) waitCert(t *testing.T, leaf *x509.Certificate, timeout time.Duration) {
	t.Helper()
	thumb := accesstoken.Thumbprint(leaf)
	guard := time.NewTimer(timeout)
	defer guard.Stop()
	for {
		rs.mu.Lock()
		n, accepted := rs.calls[thumb], rs.accepted
		rs.mu.Unlock()
		if n > 0 {
			return
		}
		select {
		case <-accepted:
		case <-guard.C:
			t.Fatalf("no call with the certificate x5t#S256 %s accepted within %v", thumb, timeout)
		}
	}
}

// stats returns the number of accepted calls, of client certificates they
// came with, and the refusals.
func (rs *resourceServer) stats() (calls, certs int, refused []string) {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for _, n := range rs.calls {
		calls += n
	}
	return calls, len(rs.calls), append([]string(nil), rs.refused...)
}

// startGRPC runs a health service behind rs.
func startGRPC(t testing.TB, s *ststest.STS, rs *resourceServer, opts ...grpc.ServerOption) string {
	t.Helper()
	svid := s.CA.SVID(t, ststest.APIAudience, time.Hour)
	interceptor := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		var certs []*x509.Certificate
		if p, ok := peer.FromContext(ctx); ok {
			if info, ok := p.AuthInfo.(credentials.TLSInfo); ok {
				certs = info.State.PeerCertificates
			}
		}
		md, _ := metadata.FromIncomingContext(ctx)
		if err := rs.check(ctx, md.Get("authorization"), certs); err != nil {
			return nil, status.Error(codes.Unauthenticated, err.Error())
		}
		return handler(ctx, req)
	}
	opts = append(opts,
		grpc.Creds(credentials.NewTLS(tlsconfig.MTLSServerConfig(svid, s.CA.Bundle(), tlsconfig.AuthorizeAny()))),
		grpc.UnaryInterceptor(interceptor))
	srv := grpc.NewServer(opts...)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return ln.Addr().String()
}

// callWhileRotating calls call from several goroutines while it rotates
// src rotations times. After each rotation it waits until rs has accepted
// a call made with the new certificate, failing the test when that takes
// longer than timeout, so the pace is set by the calls, not by a clock. It
// returns the number of calls and the errors.
func callWhileRotating(t *testing.T, s *ststest.STS, src *rotatingSource, rs *resourceServer, rotations int, timeout time.Duration, call func(context.Context) error) (int64, []error) {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	var calls atomic.Int64
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for ctx.Err() == nil {
				callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
				err := call(callCtx)
				cancel()
				if err != nil && ctx.Err() == nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
				calls.Add(1)
			}
		})
	}
	rs.waitCert(t, src.leaf(), timeout)
	for range rotations {
		svid := s.CA.SVID(t, ststest.WorkloadID, time.Hour)
		src.rotate(svid)
		rs.waitCert(t, svid.Certificates[0], timeout)
	}
	stop()
	wg.Wait()
	return calls.Load(), errs
}

// TestGRPCRotation calls a gRPC service continuously while the client's
// SVID rotates and the server replaces connections (MaxConnectionAge):
// every call carries the token bound to its connection's certificate, and
// none fails.
func TestGRPCRotation(t *testing.T) {
	t.Parallel()
	s := ststest.Start(t, nil)
	rs := newResourceServer(s)
	// Connections are replaced several times per rotation interval (gRPC
	// jitters MaxConnectionAge by ±10%), so every certificate gets used.
	addr := startGRPC(t, s, rs, grpc.KeepaliveParams(keepalive.ServerParameters{
		MaxConnectionAge:      250 * time.Millisecond,
		MaxConnectionAgeGrace: 5 * time.Second,
	}))
	src := newRotatingSource(s.CA.Bundle(), s.WorkloadSVID(t, ststest.WorkloadID))
	var rec recorder
	tokens := newTokens(t, newClient(t, s, src), exchangeclient.Request{Audience: []string{ststest.APIAudience}}, exchangeclient.WithEvents(rec.record))

	// GRPCDialOptions are TransportCredentials and PerRPCCredentials.
	conn, err := grpc.NewClient(addr, tokens.GRPCDialOptions(tlsconfig.AuthorizeID(apiID))...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	health := healthpb.NewHealthClient(conn)

	const rotations = 5
	calls, errs := callWhileRotating(t, s, src, rs, rotations, 10*time.Second, func(ctx context.Context) error {
		_, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
		return err
	})
	accepted, certs, refused := rs.stats()
	t.Logf("%d calls, %d accepted, %d client certificates, %d re-bound", calls, accepted, certs, countKind(rec.all(), exchangeclient.EventRebound))
	if len(errs) > 0 {
		t.Errorf("%d calls failed, the first: %v", len(errs), errs[0])
	}
	if len(refused) > 0 {
		t.Errorf("the server refused %d tokens, the first: %s", len(refused), refused[0])
	}
	if certs < rotations {
		t.Errorf("calls came with %d client certificates, want at least %d: connections were not replaced", certs, rotations)
	}
	if n := countKind(rec.all(), exchangeclient.EventRebound); n != rotations {
		t.Errorf("%d re-bound events, want %d", n, rotations)
	}
	for _, ev := range rec.all() {
		if ev.Blocking || ev.Kind == exchangeclient.EventFailed {
			t.Errorf("event %+v: no request should fail or be waited for", ev)
		}
	}
}

// TestGRPCCredentialsNeedTheirTransport checks that PerRPCCredentials
// refuse a connection whose client certificate they cannot know.
func TestGRPCCredentialsNeedTheirTransport(t *testing.T) {
	s := ststest.Start(t, nil)
	rs := newResourceServer(s)
	addr := startGRPC(t, s, rs)
	src := newRotatingSource(s.CA.Bundle(), s.WorkloadSVID(t, ststest.WorkloadID))
	tokens := newTokens(t, newClient(t, s, src), exchangeclient.Request{Audience: []string{ststest.APIAudience}})

	const want = "exchangeclient: the connection was not made with Tokens.TransportCredentials, so the certificate to bind the token to is unknown"
	// Without RequestInfo.
	if _, err := tokens.PerRPCCredentials().GetRequestMetadata(context.Background()); status.Code(err) != codes.Unauthenticated || status.Convert(err).Message() != want {
		t.Errorf("GetRequestMetadata without RequestInfo: %v", err)
	}
	// Over a connection made with other credentials.
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(credentials.NewTLS(tlsconfig.MTLSClientConfig(src, src, tlsconfig.AuthorizeID(apiID)))),
		grpc.WithPerRPCCredentials(tokens.PerRPCCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{})
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), want) {
		t.Errorf("Check over a connection made with other credentials: %v, want Unauthenticated: %s", err, want)
	}
	if calls, _, _ := rs.stats(); calls != 0 {
		t.Errorf("the server accepted %d calls", calls)
	}
}

// TestGRPCPerCallCredentials uses one connection with the tokens of two
// audiences, the second given per call.
func TestGRPCPerCallCredentials(t *testing.T) {
	s := ststest.Start(t, nil)
	rs := newResourceServer(s)
	addr := startGRPC(t, s, rs)
	src := newRotatingSource(s.CA.Bundle(), s.WorkloadSVID(t, ststest.WorkloadID))
	client := newClient(t, s, src)
	orders := newTokens(t, client, exchangeclient.Request{Resource: []string{ststest.OrdersResource}})
	api := newTokens(t, client, exchangeclient.Request{Audience: []string{ststest.APIAudience}})
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(orders.TransportCredentials(tlsconfig.AuthorizeID(apiID))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	health := healthpb.NewHealthClient(conn)
	if _, err := health.Check(context.Background(), &healthpb.HealthCheckRequest{}, grpc.PerRPCCredentials(api.PerRPCCredentials())); err != nil {
		t.Fatalf("Check with the API audience: %v", err)
	}
	_, err = health.Check(context.Background(), &healthpb.HealthCheckRequest{}, grpc.PerRPCCredentials(orders.PerRPCCredentials()))
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), accesstoken.ErrAudience.Error()) {
		t.Fatalf("Check with the orders audience: %v, want refused for its audience", err)
	}
}

// handshake runs TransportCredentials' client handshake against a TLS
// server and returns the AuthInfo and the certificate the server saw.
func handshake(t testing.TB, s *ststest.STS, tokens *exchangeclient.Tokens) (*exchangeclient.AuthInfo, *x509.Certificate) {
	t.Helper()
	serverSVID := s.CA.SVID(t, ststest.APIAudience, time.Hour)
	cfg := tlsconfig.MTLSServerConfig(serverSVID, s.CA.Bundle(), tlsconfig.AuthorizeAny())
	cfg.NextProtos = []string{"h2"}
	// Over net.Pipe a ticket the client never reads would block the server.
	cfg.SessionTicketsDisabled = true
	clientConn, serverConn := net.Pipe()
	server := tls.Server(serverConn, cfg)
	done := make(chan error, 1)
	go func() { done <- server.Handshake() }()
	conn, info, err := tokens.TransportCredentials(tlsconfig.AuthorizeID(apiID)).ClientHandshake(context.Background(), "api.example.org:443", clientConn)
	if err != nil {
		t.Fatalf("ClientHandshake: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	// Closing the pipe, not the TLS connections, which would wait to send
	// close_notify to a peer that does not read.
	t.Cleanup(func() { clientConn.Close(); serverConn.Close() })
	_ = conn
	authInfo, ok := info.(*exchangeclient.AuthInfo)
	if !ok {
		t.Fatalf("AuthInfo is %T, want *exchangeclient.AuthInfo", info)
	}
	return authInfo, server.ConnectionState().PeerCertificates[0]
}

func TestTransportCredentials(t *testing.T) {
	s := ststest.Start(t, nil)
	src := newRotatingSource(s.CA.Bundle(), s.WorkloadSVID(t, ststest.WorkloadID))
	tokens := newTokens(t, newClient(t, s, src), exchangeclient.Request{Audience: []string{ststest.APIAudience}})
	info, seen := handshake(t, s, tokens)
	if info.Leaf != src.leaf() || !seen.Equal(info.Leaf) {
		t.Errorf("AuthInfo.Leaf is not the certificate the server saw")
	}
	if info.SPIFFEID == nil || info.SPIFFEID.String() != ststest.APIAudience {
		t.Errorf("AuthInfo.SPIFFEID = %v, want %s", info.SPIFFEID, ststest.APIAudience)
	}
	if info.AuthType() != "tls" || info.SecurityLevel != credentials.PrivacyAndIntegrity {
		t.Errorf("AuthType %q, SecurityLevel %v", info.AuthType(), info.SecurityLevel)
	}
	ctx := credentials.NewContextWithRequestInfo(context.Background(), credentials.RequestInfo{AuthInfo: info})
	md, err := tokens.PerRPCCredentials().GetRequestMetadata(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := strings.CutPrefix(md["authorization"], "Bearer ")
	if _, err := s.Verifier(ststest.APIAudience).Verify(ctx, tok, seen); err != nil {
		t.Errorf("the token attached does not verify for the connection's certificate: %v", err)
	}
	if !tokens.PerRPCCredentials().RequireTransportSecurity() {
		t.Error("RequireTransportSecurity is false")
	}
}

// BenchmarkPerRPCCredentials measures attaching a kept token to a call.
// "handshake" uses the AuthInfo of a connection made with
// TransportCredentials; "leaf" one built from the certificate alone, which
// is looked up.
func BenchmarkPerRPCCredentials(b *testing.B) {
	s := ststest.Start(b, nil)
	src := newRotatingSource(s.CA.Bundle(), s.WorkloadSVID(b, ststest.WorkloadID))
	tokens := newTokens(b, newClient(b, s, src), exchangeclient.Request{Audience: []string{ststest.APIAudience}})
	creds := tokens.PerRPCCredentials()
	fromHandshake, _ := handshake(b, s, tokens)
	for _, bc := range []struct {
		name string
		info credentials.AuthInfo
	}{
		{"handshake", fromHandshake},
		{"leaf", &exchangeclient.AuthInfo{Leaf: src.leaf()}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			ctx := credentials.NewContextWithRequestInfo(context.Background(), credentials.RequestInfo{
				Method:   "/grpc.health.v1.Health/Check",
				AuthInfo: bc.info,
			})
			b.ReportAllocs()
			for b.Loop() {
				md, err := creds.GetRequestMetadata(ctx)
				if err != nil || len(md["authorization"]) < 8 {
					b.Fatalf("GetRequestMetadata = %v", err)
				}
			}
		})
	}
}
