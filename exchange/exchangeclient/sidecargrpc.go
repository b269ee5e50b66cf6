package exchangeclient

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/resolver"
	"google.golang.org/protobuf/proto"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/accesstoken/grpcauth"
)

// GRPCDialOptions returns the grpc.NewClient options that make calls with
// these tokens, the same program in either mode:
//
//	conn, err := grpc.NewClient("api.example.org:443", tokens.GRPCDialOptions(tlsconfig.AuthorizeID(api))...)
//
// Without WithSidecar they are TransportCredentials(authorizer) and
// PerRPCCredentials: mTLS with the current X509-SVID, each call carrying
// the token bound to its connection's certificate.
//
// With WithSidecar, authorizer is not used (the sidecar authenticates the
// server). Every connection goes to the sidecar's address, whatever the
// target, as HTTP/2 in clear text (h2c with prior knowledge) with the
// target naming the destination in :authority, which is how the sidecar
// picks its upstream; a target of the default dns scheme is not looked
// up. Each call carries "authorization: Bearer <token>" bound to the
// sidecar's certificate. A call the resource server refuses with
// codes.Unauthenticated and the binding-mismatch ErrorInfo
// (grpcauth.RefusalOf is accesstoken.RefusalBindingMismatch: the sidecar's
// SVID has rotated) makes the client re-bind the token once, shared with
// concurrent callers (an RFC 8693 exchange of the old token through the
// sidecar, which the STS binds to the certificate it now sees), and make
// the call again once. Any other refusal (RefusalBadToken among them), a
// failed re-binding, or a second mismatch is returned as it came. A
// mismatch re-binds the token even when the call is not made again, so
// the next call presents the re-bound one.
//
// A stream is made again only when it was refused before any message was
// received, which is how a refusal at its start shows: the refusal
// arrives on the first RecvMsg, which then opens the stream again, sends
// the messages sent so far (and CloseSend, if it was called) and receives
// on the new stream. Up to 16 messages are kept for that, as copies
// (proto.Clone), so a caller may reuse a message; a stream that sends
// more before receiving any, or a message that is not a proto.Message, is
// not made again. While a message is kept, SendMsg does not return the
// io.EOF of a refused stream, so the caller sends the whole stream and
// the new one gets all of it; past that, as on any gRPC stream, SendMsg
// may return io.EOF, and RecvMsg then tells what happened. Header,
// Trailer and Context do not wait for the re-binding (they answer for
// the refused stream until the new one is open).
func (t *Tokens) GRPCDialOptions(authorizer tlsconfig.Authorizer) []grpc.DialOption {
	if t.sidecar == nil {
		return []grpc.DialOption{
			grpc.WithTransportCredentials(t.TransportCredentials(authorizer)),
			grpc.WithPerRPCCredentials(t.PerRPCCredentials()),
		}
	}
	d := t.c.sidecar
	return []grpc.DialOption{
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return d.DialContext(ctx, "", "") }),
		// Plain text to the sidecar only: WithSidecar's address is a
		// loopback IP or a Unix socket, and the dialer dials nothing else.
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithResolvers(sidecarResolver{addr: d.address}),
		grpc.WithChainUnaryInterceptor(t.sidecarUnary),
		grpc.WithChainStreamInterceptor(t.sidecarStream),
	}
}

// sidecarResolver resolves every target of the dns scheme to the
// sidecar's address without a lookup: the destination's name need resolve
// only where the sidecar runs. The dialer reaches only the sidecar
// whatever the address.
type sidecarResolver struct{ addr string }

func (r sidecarResolver) Build(_ resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	_ = cc.UpdateState(resolver.State{Addresses: []resolver.Address{{Addr: r.addr}}})
	return r, nil
}

func (sidecarResolver) Scheme() string                        { return "dns" }
func (sidecarResolver) ResolveNow(resolver.ResolveNowOptions) {}
func (sidecarResolver) Close()                                {}

// withToken is ctx with h's token in the outgoing metadata.
func withToken(ctx context.Context, h *heldToken) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", h.header)
}

// isRPCBindingMismatch reports whether err refuses the call's token as
// bound to another certificate (accesstoken.RefusalBindingMismatch).
func isRPCBindingMismatch(err error) bool {
	return grpcauth.RefusalOf(err) == accesstoken.RefusalBindingMismatch
}

// sidecarUnary attaches the sidecar token to a unary call and makes the
// call again once after a binding mismatch (sidecarCall).
func (t *Tokens) sidecarUnary(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	h, err := t.token(ctx, t.sidecar, nil)
	if err != nil {
		return rpcTokenError(ctx, err)
	}
	attempt := func(h *heldToken) (struct{}, bool, error) {
		err := invoker(withToken(ctx, h), method, req, reply, cc, opts...)
		return struct{}{}, isRPCBindingMismatch(err), err
	}
	_, err = sidecarCall(ctx, t, h, attempt, func(struct{}) bool { return true })
	return err
}

// maxStreamReplay is how many messages a sidecar stream keeps, before it
// has received any, to send again on a stream made again.
const maxStreamReplay = 16

// sidecarStream attaches the sidecar token to a stream and returns it
// wrapped for a retry at its start (see GRPCDialOptions).
func (t *Tokens) sidecarStream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	h, err := t.token(ctx, t.sidecar, nil)
	if err != nil {
		return nil, rpcTokenError(ctx, err)
	}
	open := func(h *heldToken) (grpc.ClientStream, error) {
		return streamer(withToken(ctx, h), desc, cc, method, opts...)
	}
	cs, err := open(h)
	if err != nil {
		return nil, err
	}
	return newRetryStream(t, ctx, open, h, cs), nil
}

// retryStream is a stream in the sidecar mode that can be made again
// once, with a re-bound token, when it is refused before any message has
// been received.
type retryStream struct {
	t    *Tokens
	ctx  context.Context // the caller's, for the re-binding and the new stream
	open func(*heldToken) (grpc.ClientStream, error)
	held *heldToken // the token the stream was opened with

	mu sync.Mutex // guards the fields below, never held over network work
	// madeAgain is signalled when a retry ends (retrying turns false).
	madeAgain sync.Cond
	cur       grpc.ClientStream
	// sent are copies of the messages sent while none has been
	// received, for the stream made again.
	sent      []proto.Message
	closeSent bool
	// settled means the stream is not made again: a message has been
	// received, too many or a message that cannot be copied sent, or it
	// has been made again already.
	settled bool
	// retrying means retry is re-binding the token and making the stream
	// again: cur is the refused stream, and what is sent meanwhile is
	// kept for the new one.
	retrying bool
	// rebound means the refusal has been acted on: the token was re-bound
	// (or that failed), so a later RecvMsg does not do it again.
	rebound bool
}

func newRetryStream(t *Tokens, ctx context.Context, open func(*heldToken) (grpc.ClientStream, error), h *heldToken, cs grpc.ClientStream) *retryStream {
	s := &retryStream{t: t, ctx: ctx, open: open, held: h, cur: cs}
	s.madeAgain.L = &s.mu
	return s
}

func (s *retryStream) stream() grpc.ClientStream {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

func (s *retryStream) Header() (metadata.MD, error) { return s.stream().Header() }
func (s *retryStream) Trailer() metadata.MD         { return s.stream().Trailer() }
func (s *retryStream) Context() context.Context     { return s.stream().Context() }

// SendMsg sends m, and keeps a copy of it while the stream may be made
// again. The refused stream may end before all was sent: while m is kept,
// its io.EOF is not returned, so that the caller goes on sending (and
// closes) the whole stream, which retry then sends on the new one.
func (s *retryStream) SendMsg(m any) error {
	pm, copyable := m.(proto.Message)
	s.mu.Lock()
	room := func() bool { return copyable && len(s.sent) < maxStreamReplay }
	for s.retrying && !room() {
		// It can only follow what retry sends: wait for the new stream.
		s.madeAgain.Wait()
	}
	kept := false
	switch {
	case s.settled:
	case room():
		// A copy: the caller may reuse m once SendMsg returns.
		s.sent = append(s.sent, proto.Clone(pm))
		kept = true
	default:
		s.settled, s.sent = true, nil
	}
	if s.retrying {
		// retry sends it on the new stream.
		s.mu.Unlock()
		return nil
	}
	cur := s.cur
	s.mu.Unlock()
	err := cur.SendMsg(m)
	if kept && errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

func (s *retryStream) CloseSend() error {
	s.mu.Lock()
	s.closeSent = true
	if s.retrying {
		// retry closes the new stream once it has sent what was kept.
		s.mu.Unlock()
		return nil
	}
	cur := s.cur
	s.mu.Unlock()
	return cur.CloseSend()
}

// RecvMsg receives from the stream; a binding mismatch before any message
// makes the stream again (retry).
func (s *retryStream) RecvMsg(m any) error {
	err := s.stream().RecvMsg(m)
	switch {
	case err == nil:
		s.mu.Lock()
		s.settled, s.sent = true, nil
		s.mu.Unlock()
		return nil
	case isRPCBindingMismatch(err):
		return s.retry(m, err)
	default:
		return err
	}
}

// retry re-binds the token after refusal, a binding mismatch, and, when
// the stream may be made again, makes it again with the re-bound token,
// sends it what was sent, and receives m from it. It returns refusal when
// the stream may not be made again or the re-binding fails. The lock is
// not held while it re-binds, opens or sends, so Header, Context, Trailer,
// SendMsg and CloseSend do not wait on the network meanwhile.
func (s *retryStream) retry(m any, refusal error) error {
	s.mu.Lock()
	if s.rebound {
		s.mu.Unlock()
		return refusal
	}
	s.rebound = true
	again := !s.settled
	s.retrying = again
	s.mu.Unlock()

	// Re-bound whether or not the stream is made again, so that the next
	// call presents a token the resource server accepts.
	fresh, err := s.t.rebindSidecar(s.ctx, s.t.sidecar, s.held)
	if !again {
		return refusal
	}
	var next grpc.ClientStream
	if err == nil {
		next, err = s.open(fresh)
	} else {
		err = refusal
	}
	if err != nil {
		s.mu.Lock()
		s.retrying, s.settled, s.sent = false, true, nil
		s.madeAgain.Broadcast()
		s.mu.Unlock()
		return err
	}

	// Send what was kept, including what is sent meanwhile, then
	// CloseSend if it was called; stop sending if the new stream ends
	// (RecvMsg tells how).
	replayed, closed := 0, false
	var sendErr error
	s.mu.Lock()
	for {
		if replayed < len(s.sent) {
			msg := s.sent[replayed]
			replayed++
			s.mu.Unlock()
			if sendErr == nil {
				sendErr = next.SendMsg(msg)
			}
			s.mu.Lock()
			continue
		}
		if s.closeSent && !closed {
			closed = true
			s.mu.Unlock()
			_ = next.CloseSend()
			s.mu.Lock()
			continue
		}
		break
	}
	s.cur, s.retrying, s.settled, s.sent = next, false, true, nil
	s.madeAgain.Broadcast()
	s.mu.Unlock()
	return next.RecvMsg(m)
}
