package grpcauth

import (
	"context"
	"crypto/x509"
	"fmt"
	"net/http"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/accesstoken/internal/bearer"
	stsid "github.com/spiffe-sts/spiffe-sts/spiffeid"
	"github.com/spiffe-sts/spiffe-sts/spiffeid/forwarded"
)

// Option configures the interceptors. Only this package creates options.
type Option interface {
	apply(*options)
}

type options struct {
	methodScopes map[string][]string
	proxies      *forwarded.Policy
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// WithMethodScopes requires a token granting every one of scopes for calls
// of fullMethod ("/package.Service/Method"); calls whose token lacks one
// fail with codes.PermissionDenied. Options for the same method add up.
// Methods without scopes need only a valid token. It panics if a scope is
// not a valid RFC 6749 §3.3 scope-token.
func WithMethodScopes(fullMethod string, scopes ...string) Option {
	for _, s := range scopes {
		if !bearer.ValidScope(s) {
			panic(fmt.Sprintf("grpcauth: invalid scope %q for %s", s, fullMethod))
		}
	}
	scopes = append([]string(nil), scopes...)
	return optionFunc(func(o *options) {
		if o.methodScopes == nil {
			o.methodScopes = map[string][]string{}
		}
		o.methodScopes[fullMethod] = append(o.methodScopes[fullMethod], scopes...)
	})
}

// WithTrustedProxies makes the interceptors check a token's binding
// against the client certificate a trusted proxy forwards (package
// spiffeid/forwarded), for servers behind a proxy or sidecar that
// terminates mTLS; it mirrors httpauth.WithTrustedProxies with the
// forwarding headers read from the call's metadata. The hop is the peer
// of the connection (stsid.PeerFromContext), or a Unix socket.
//
// With it, a call from a trusted proxy is checked against the forwarded
// certificate only: one whose proxy forwarded none is refused, never
// served as the proxy. A call from any other hop is checked against that
// hop's certificate as without the option, unless it carries a
// forwarding header, which is refused. Refusals are
// codes.Unauthenticated with a fixed message (forwarded.Describe). It
// panics if policy is nil.
func WithTrustedProxies(policy *forwarded.Policy) Option {
	if policy == nil {
		panic("grpcauth: nil trusted-proxy policy")
	}
	return optionFunc(func(o *options) { o.proxies = policy })
}

func newOptions(opts []Option) *options {
	o := new(options)
	for _, opt := range opts {
		opt.apply(o)
	}
	return o
}

// UnaryServerInterceptor returns an interceptor that admits a call only
// with a valid access token bound to the client certificate of its
// connection, and stores the token's claims in the handler's context (read
// them with accesstoken.FromContext).
//
// A refused token fails the call with codes.Unauthenticated, message
// "invalid token: " and a fixed description, and a google.rpc.ErrorInfo
// detail (domain accesstoken.ErrorInfoDomain) whose reason is
// BINDING_MISMATCH for a valid token bound to another certificate (RFC
// 8705 §3) and BAD_TOKEN otherwise; RefusalOf reads it.
func UnaryServerInterceptor(v *accesstoken.Verifier, opts ...Option) grpc.UnaryServerInterceptor {
	o := newOptions(opts)
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, err := o.authorize(ctx, v, info.FullMethod)
		if err != nil {
			return nil, err
		}
		return handler(ctx, req)
	}
}

// StreamServerInterceptor is the streaming counterpart of
// UnaryServerInterceptor: the token is checked once, when the stream
// starts, and the handler's ServerStream.Context carries the claims.
func StreamServerInterceptor(v *accesstoken.Verifier, opts ...Option) grpc.StreamServerInterceptor {
	o := newOptions(opts)
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, err := o.authorize(ss.Context(), v, info.FullMethod)
		if err != nil {
			return err
		}
		return handler(srv, &serverStream{ServerStream: ss, ctx: ctx})
	}
}

// serverStream is a grpc.ServerStream whose Context carries the claims.
type serverStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *serverStream) Context() context.Context { return s.ctx }

// authorize verifies the call's token against the peer's leaf certificate
// and the method's scopes, and returns ctx with the claims.
func (o *options) authorize(ctx context.Context, v *accesstoken.Verifier, fullMethod string) (context.Context, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	raw, err := bearer.Token(md.Get("authorization"))
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}
	var leaf *x509.Certificate
	if o.proxies != nil {
		res, err := o.proxies.Client(hopFromContext(ctx), headerOf(md))
		if err != nil {
			return nil, refusalStatus(forwarded.Describe(err), accesstoken.RefusalBadToken)
		}
		leaf = res.Client.Leaf
	} else {
		p, ok := stsid.PeerFromContext(ctx)
		if !ok {
			return nil, refusalStatus("no verified client certificate", accesstoken.RefusalBadToken)
		}
		leaf = p.Leaf
	}
	claims, err := v.Verify(ctx, raw, leaf)
	if err != nil {
		return nil, invalidToken(err)
	}
	if missing := bearer.MissingScopes(claims, o.methodScopes[fullMethod]); len(missing) > 0 {
		return nil, status.Error(codes.PermissionDenied, "insufficient scope: missing "+strings.Join(missing, " "))
	}
	return accesstoken.NewContext(ctx, claims), nil
}

// hopFromContext is the call's hop: its verified peer, and whether it
// came over a Unix socket.
func hopFromContext(ctx context.Context) forwarded.Hop {
	var hop forwarded.Hop
	if p, ok := stsid.PeerFromContext(ctx); ok {
		hop.Peer = p
	}
	if gp, ok := peer.FromContext(ctx); ok && gp.Addr != nil && gp.Addr.Network() == "unix" {
		hop.UnixSocket = true
	}
	return hop
}

// headerOf returns the metadata as a header; its lower-case names are
// matched in any case by forwarded.Policy.
func headerOf(md metadata.MD) http.Header {
	h := make(http.Header, len(md))
	for k, vs := range md {
		h[k] = vs
	}
	return h
}
