package exchangeclient_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/accesstoken/grpcauth"
	"github.com/spiffe-sts/spiffe-sts/exchange/exchangeclient"
	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
	"github.com/spiffe-sts/spiffe-sts/internal/ststest"
)

// grpcAPI is a gRPC resource server behind grpcauth's interceptors, the
// real verifier, for one audience: the health service over mTLS. It
// counts the calls and streams that reach it, refused or not.
type grpcAPI struct {
	addr           string
	unary, streams atomic.Int32

	mu sync.Mutex
	// uploads are the payloads (HealthCheckRequest.Service) each upload
	// the server accepted received, in order.
	uploads [][]string
}

// accepted returns the payloads of the uploads the server accepted.
func (api *grpcAPI) accepted() [][]string {
	api.mu.Lock()
	defer api.mu.Unlock()
	return slices.Clone(api.uploads)
}

// uploadDesc is a client-streaming method: the client sends messages and
// closes, the server answers once with SERVING.
var uploadDesc = grpc.StreamDesc{StreamName: "Upload", ClientStreams: true}

const uploadMethod = "/test.Upload/Upload"

func (api *grpcAPI) upload(_ any, ss grpc.ServerStream) error {
	var got []string
	for {
		m := new(healthpb.HealthCheckRequest)
		err := ss.RecvMsg(m)
		if errors.Is(err, io.EOF) {
			api.mu.Lock()
			api.uploads = append(api.uploads, got)
			api.mu.Unlock()
			return ss.SendMsg(&healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING})
		}
		if err != nil {
			return err
		}
		got = append(got, m.GetService())
	}
}

func startGRPCAPI(t *testing.T, s *ststest.STS, audience string) *grpcAPI {
	t.Helper()
	api := &grpcAPI{}
	v := s.Verifier(audience)
	svid := s.WorkloadSVID(t, "spiffe://example.org/ns/prod/sa/orders")
	srv := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(tlsconfig.MTLSServerConfig(svid, s.CA.Bundle(), tlsconfig.AuthorizeMemberOf(s.CA.TrustDomain)))),
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			api.unary.Add(1)
			return handler(ctx, req)
		}, grpcauth.UnaryServerInterceptor(v)),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			api.streams.Add(1)
			return handler(srv, ss)
		}, grpcauth.StreamServerInterceptor(v)),
	)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	upload := uploadDesc
	upload.Handler = api.upload
	srv.RegisterService(&grpc.ServiceDesc{ServiceName: "test.Upload", HandlerType: (*any)(nil), Streams: []grpc.StreamDesc{upload}}, struct{}{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	api.addr = ln.Addr().String()
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return api
}

// dial returns a health client of api through st's sidecar, made with
// GRPCDialOptions.
func (st *sidecarSetup) dial(t *testing.T, api *grpcAPI) healthpb.HealthClient {
	t.Helper()
	return healthpb.NewHealthClient(st.conn(t, api))
}

func (st *sidecarSetup) conn(t *testing.T, api *grpcAPI) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(api.addr, st.tokens.GRPCDialOptions(nil)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// uploadStyle is how upload sends.
type uploadStyle struct {
	// answerFirst waits after the first message for the server's answer
	// (Header), so that a refusal at the stream's start has arrived
	// before the other messages are sent.
	answerFirst bool
	// reuse sends one message, changed between sends, rather than a new
	// message each time.
	reuse bool
}

// payloads are the n distinct payloads upload sends.
func payloads(n int) []string {
	p := make([]string, n)
	for i := range p {
		p[i] = fmt.Sprintf("message %d", i)
	}
	return p
}

// upload sends payloads(n) on an Upload stream, closes it and receives
// the answer. It follows gRPC's client pattern: once SendMsg returns
// io.EOF (the stream has ended) it stops sending, and RecvMsg tells what
// happened.
func upload(conn *grpc.ClientConn, n int, style uploadStyle) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs, err := conn.NewStream(ctx, &uploadDesc, uploadMethod)
	if err != nil {
		return err
	}
	m := new(healthpb.HealthCheckRequest)
	for i, p := range payloads(n) {
		if !style.reuse {
			m = new(healthpb.HealthCheckRequest)
		}
		m.Service = p
		err := cs.SendMsg(m)
		if errors.Is(err, io.EOF) {
			return cs.RecvMsg(new(healthpb.HealthCheckResponse))
		}
		if err != nil {
			return err
		}
		if i == 0 && style.answerFirst {
			if _, err := cs.Header(); err != nil {
				return err
			}
		}
	}
	if err := cs.CloseSend(); err != nil {
		return err
	}
	return cs.RecvMsg(new(healthpb.HealthCheckResponse))
}

func (st *sidecarSetup) tokenRequests() int { return st.sidecar.hitsOf(protocol.PathToken) }

// check makes one Health.Check call.
func check(hc healthpb.HealthClient) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

// watch opens a Health.Watch stream (one request message, then
// CloseSend) and receives its first message.
func watch(hc healthpb.HealthClient) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return err
	}
	resp, err := stream.Recv()
	if err != nil {
		return err
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return status.Errorf(codes.Internal, "status %v", resp.GetStatus())
	}
	return nil
}

// expectRefusal fails unless err is codes.Unauthenticated with refusal.
func expectRefusal(t *testing.T, err error, refusal accesstoken.Refusal) {
	t.Helper()
	if status.Code(err) != codes.Unauthenticated || grpcauth.RefusalOf(err) != refusal {
		t.Fatalf("got %v, want Unauthenticated with refusal %s", err, refusal)
	}
}

// TestSidecarGRPCRebindsOnMismatch: over h2c through the sidecar, a unary
// call and a stream each succeed before and after a rotation of the
// sidecar's SVID; after the rotation the first is refused for a binding
// mismatch, the token re-bound once and the call or stream made again
// once, and the re-bound token is kept for the next.
func TestSidecarGRPCRebindsOnMismatch(t *testing.T) {
	calls := []struct {
		name  string
		call  func(healthpb.HealthClient) error
		count func(*grpcAPI) int32
	}{
		{name: "unary", call: check, count: func(api *grpcAPI) int32 { return api.unary.Load() }},
		{name: "stream", call: watch, count: func(api *grpcAPI) int32 { return api.streams.Load() }},
	}
	for _, unixSocket := range []bool{false, true} {
		for _, c := range calls {
			name := c.name + " loopback"
			if unixSocket {
				name = c.name + " unix socket"
			}
			t.Run(name, func(t *testing.T) {
				st := newSidecarSetup(t, unixSocket)
				api := startGRPCAPI(t, st.s, ststest.APIAudience)
				hc := st.dial(t, api)
				if err := c.call(hc); err != nil {
					t.Fatalf("before rotation: %v", err)
				}
				tokenRequests := st.tokenRequests()

				st.sidecar.rotate(st.s.CA.SVID(t, ststest.WorkloadID, time.Hour))
				before := c.count(api)
				if err := c.call(hc); err != nil {
					t.Fatalf("after rotation: %v", err)
				}
				if n := c.count(api) - before; n != 2 {
					t.Fatalf("the resource server saw %d, want the refused one and one more", n)
				}
				if n := st.tokenRequests() - tokenRequests; n != 1 {
					t.Fatalf("token requests for the re-binding = %d, want 1", n)
				}
				ev := st.events.wait(t, 30*time.Second, "rebound", func(ev exchangeclient.Event) bool { return ev.Kind == exchangeclient.EventRebound })
				if ev.Err != nil || ev.Expiry.IsZero() {
					t.Fatalf("rebound event %+v", ev)
				}
				before = c.count(api)
				if err := c.call(hc); err != nil || c.count(api)-before != 1 {
					t.Fatalf("after the re-binding: %v, %d attempts", err, c.count(api)-before)
				}
			})
		}
	}
}

// TestSidecarGRPCSecondMismatch: the sidecar keeps presenting an old
// SVID to the resource server while the STS sees its new one, so the
// re-bound token is refused too: that second refusal is returned, after
// one re-binding and two attempts, for a call and for a stream.
func TestSidecarGRPCSecondMismatch(t *testing.T) {
	st := newSidecarSetup(t, false)
	api := startGRPCAPI(t, st.s, ststest.APIAudience)
	hc := st.dial(t, api)
	st.sidecar.pin(api.addr, st.s.CA.SVID(t, ststest.WorkloadID, time.Hour))
	st.sidecar.rotate(st.s.CA.SVID(t, ststest.WorkloadID, time.Hour))
	tokenRequests := st.tokenRequests()

	expectRefusal(t, check(hc), accesstoken.RefusalBindingMismatch)
	if n := api.unary.Load(); n != 2 {
		t.Fatalf("the resource server saw %d calls, want 2", n)
	}
	if n := st.tokenRequests() - tokenRequests; n != 1 {
		t.Fatalf("token requests = %d, want one re-binding", n)
	}

	// The stream's token is the re-bound one, refused again, and re-bound
	// once more: one retry per stream.
	expectRefusal(t, watch(hc), accesstoken.RefusalBindingMismatch)
	if n := api.streams.Load(); n != 2 {
		t.Fatalf("the resource server saw %d streams, want 2", n)
	}
	if n := st.tokenRequests() - tokenRequests; n != 2 {
		t.Fatalf("token requests = %d, want one re-binding for each", n)
	}
}

// TestSidecarGRPCBadToken: a bad_token refusal (a token for another
// audience), with or without a rotation, comes back as it is: one
// attempt, no token request.
func TestSidecarGRPCBadToken(t *testing.T) {
	for _, rotate := range []bool{false, true} {
		name := "no rotation"
		if rotate {
			name = "after a rotation"
		}
		t.Run(name, func(t *testing.T) {
			st := newSidecarSetup(t, false)
			elsewhere := startGRPCAPI(t, st.s, "spiffe://example.org/elsewhere")
			hc := st.dial(t, elsewhere)
			if rotate {
				st.sidecar.rotate(st.s.CA.SVID(t, ststest.WorkloadID, time.Hour))
			}
			tokenRequests := st.tokenRequests()
			expectRefusal(t, check(hc), accesstoken.RefusalBadToken)
			expectRefusal(t, watch(hc), accesstoken.RefusalBadToken)
			if u, s := elsewhere.unary.Load(), elsewhere.streams.Load(); u != 1 || s != 1 {
				t.Fatalf("the resource server saw %d calls and %d streams, want 1 of each", u, s)
			}
			if n := st.tokenRequests() - tokenRequests; n != 0 {
				t.Fatalf("%d token requests, want none", n)
			}
		})
	}
}

// TestSidecarGRPCConcurrentMismatches: calls refused at once share one
// re-binding.
func TestSidecarGRPCConcurrentMismatches(t *testing.T) {
	st := newSidecarSetup(t, false)
	api := startGRPCAPI(t, st.s, ststest.APIAudience)
	hc := st.dial(t, api)
	if err := check(hc); err != nil {
		t.Fatal(err)
	}
	st.sidecar.rotate(st.s.CA.SVID(t, ststest.WorkloadID, time.Hour))
	tokenRequests := st.tokenRequests()
	const callers = 8
	errs := make([]error, callers)
	var wg sync.WaitGroup
	for i := range callers {
		wg.Go(func() {
			if i%2 == 0 {
				errs[i] = check(hc)
			} else {
				errs[i] = watch(hc)
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("caller %d: %v", i, err)
		}
	}
	if n := st.tokenRequests() - tokenRequests; n != 1 {
		t.Fatalf("token requests = %d, want one re-binding shared by %d callers", n, callers)
	}
	if n := countKind(st.events.all(), exchangeclient.EventRebound); n != 1 {
		t.Fatalf("%d rebound events, want 1", n)
	}
}

// TestSidecarGRPCRebindFails: the STS will not re-bind to the sidecar's
// new SVID (an unauthorized workload); the resource server's refusal comes
// back after one attempt.
func TestSidecarGRPCRebindFails(t *testing.T) {
	st := newSidecarSetup(t, false)
	api := startGRPCAPI(t, st.s, ststest.APIAudience)
	hc := st.dial(t, api)
	st.sidecar.rotate(st.s.CA.SVID(t, ststest.DeniedID, time.Hour))
	expectRefusal(t, check(hc), accesstoken.RefusalBindingMismatch)
	if n := api.unary.Load(); n != 1 {
		t.Fatalf("the resource server saw %d calls, want 1", n)
	}
	if n := countKind(st.events.all(), exchangeclient.EventRebound); n != 0 {
		t.Fatalf("%d rebound events, want none", n)
	}
}

// TestSidecarPerRPCCredentials: in the sidecar mode the per-call
// credentials, which cannot re-bind, refuse and name GRPCDialOptions.
func TestSidecarPerRPCCredentials(t *testing.T) {
	st := newSidecarSetup(t, false)
	md, err := st.tokens.PerRPCCredentials().GetRequestMetadata(context.Background())
	const want = "exchangeclient: with WithSidecar, make the connection with Tokens.GRPCDialOptions, which re-binds the token when the sidecar's certificate rotates"
	if md != nil || status.Code(err) != codes.Unauthenticated || status.Convert(err).Message() != want {
		t.Fatalf("GetRequestMetadata = %v, %v; want Unauthenticated %q", md, err, want)
	}
}

// TestSidecarGRPCStreamReplay: a client stream refused after sending is
// made again with the messages it sent, in order and once, and its
// CloseSend, up to 16: whether the refusal arrived before the messages
// after the first were sent (the sender then sees no io.EOF: they are
// kept for the stream made again) or not, and whether the sender reuses
// one message (a copy is kept). One that sent more before receiving
// anything gets the refusal, the token re-bound for the next stream.
func TestSidecarGRPCStreamReplay(t *testing.T) {
	tests := []struct {
		name          string
		messages      int
		style         uploadStyle
		expectRefusal bool
	}{
		{name: "three messages", messages: 3},
		{name: "sixteen messages", messages: 16},
		{name: "five messages after the refusal arrived", messages: 5, style: uploadStyle{answerFirst: true}},
		{name: "sixteen messages after the refusal arrived", messages: 16, style: uploadStyle{answerFirst: true}},
		{name: "one message reused", messages: 5, style: uploadStyle{reuse: true}},
		{name: "one message reused after the refusal arrived", messages: 5, style: uploadStyle{answerFirst: true, reuse: true}},
		{name: "seventeen messages", messages: 17, expectRefusal: true},
		{name: "seventeen messages after the refusal arrived", messages: 17, style: uploadStyle{answerFirst: true}, expectRefusal: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newSidecarSetup(t, false)
			api := startGRPCAPI(t, st.s, ststest.APIAudience)
			conn := st.conn(t, api)
			st.sidecar.rotate(st.s.CA.SVID(t, ststest.WorkloadID, time.Hour))
			tokenRequests := st.tokenRequests()
			err := upload(conn, tt.messages, tt.style)
			if tt.expectRefusal {
				expectRefusal(t, err, accesstoken.RefusalBindingMismatch)
				if n, m := api.streams.Load(), st.tokenRequests()-tokenRequests; n != 1 || m != 1 {
					t.Fatalf("%d streams, %d token requests; want 1 and one re-binding", n, m)
				}
				// The re-bound token is kept: the next stream is accepted
				// at once.
				if err := upload(conn, 3, uploadStyle{}); err != nil {
					t.Fatalf("the next stream: %v", err)
				}
				if n, m := api.streams.Load(), st.tokenRequests()-tokenRequests; n != 2 || m != 1 {
					t.Fatalf("after the next stream: %d streams, %d token requests; want 2 and 1", n, m)
				}
				if got := api.accepted(); !slices.EqualFunc(got, [][]string{payloads(3)}, slices.Equal) {
					t.Fatalf("the server accepted %q, want %q", got, payloads(3))
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if n := api.streams.Load(); n != 2 {
				t.Fatalf("%d streams, want the refused one and one more", n)
			}
			if got := api.accepted(); !slices.EqualFunc(got, [][]string{payloads(tt.messages)}, slices.Equal) {
				t.Fatalf("the server accepted %q, want %q once", got, payloads(tt.messages))
			}
		})
	}
}

// TestSidecarGRPCStreamUsableWhileRebinding: while a refused stream waits
// for its token to be re-bound (the sidecar holds the token request), the
// stream's Context and Header return at once; the stream made again then
// succeeds.
func TestSidecarGRPCStreamUsableWhileRebinding(t *testing.T) {
	st := newSidecarSetup(t, false)
	api := startGRPCAPI(t, st.s, ststest.APIAudience)
	conn := st.conn(t, api)
	st.sidecar.rotate(st.s.CA.SVID(t, ststest.WorkloadID, time.Hour))
	arrived, release := st.sidecar.holdTokens(t)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cs, err := conn.NewStream(ctx, &uploadDesc, uploadMethod)
	if err != nil {
		t.Fatal(err)
	}
	if err := cs.SendMsg(&healthpb.HealthCheckRequest{Service: "only"}); err != nil {
		t.Fatal(err)
	}
	if err := cs.CloseSend(); err != nil {
		t.Fatal(err)
	}
	received := make(chan error, 1)
	go func() { received <- cs.RecvMsg(new(healthpb.HealthCheckResponse)) }()
	select {
	case <-arrived:
	case <-time.After(20 * time.Second):
		t.Fatal("no re-binding token request reached the sidecar")
	}

	// The guard only keeps a broken stream from hanging the test: both
	// return without waiting on anything.
	returned := make(chan struct{})
	go func() {
		_ = cs.Context()
		_, _ = cs.Header()
		close(returned)
	}()
	select {
	case <-returned:
	case <-time.After(5 * time.Second):
		t.Fatal("Context or Header waits for the re-binding")
	}
	release()
	if err := <-received; err != nil {
		t.Fatalf("RecvMsg: %v", err)
	}
	if got := api.accepted(); !slices.EqualFunc(got, [][]string{{"only"}}, slices.Equal) {
		t.Fatalf("the server accepted %q, want [[only]]", got)
	}
}
