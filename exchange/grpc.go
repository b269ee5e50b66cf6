package exchange

import (
	"context"
	"crypto/tls"
	"net/http"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/spiffe-sts/spiffe-sts/exchange/exchangepb"
	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
)

// grpcService is the gRPC API, exchangepb.TokenExchange, served on the
// HTTPS listener of Server.HTTPServer. It runs the HTTP token endpoint's
// steps: client authentication by the connection's X509-SVID, the request
// parameters through the same builder as the form, then exchange.
type grpcService struct {
	exchangepb.UnimplementedTokenExchangeServer
	s *Server
}

// Exchange implements exchangepb.TokenExchangeServer. Refusals are the
// Error's gRPC status (Error.GRPCStatus). The request id of the audit
// record is the trailer x-request-id; temporarily_unavailable adds
// retry-after (seconds) besides the status's RetryInfo. A caller over its
// rate limit gets ResourceExhausted, a server over Config.MaxInFlight
// Unavailable.
func (g grpcService) Exchange(ctx context.Context, in *exchangepb.ExchangeRequest) (*exchangepb.ExchangeResponse, error) {
	s := g.s
	d := s.begin(metricsTransportGRPC)
	trailer := metadata.Pairs(trailerRequestID, d.id)
	p, _ := peer.FromContext(ctx)
	if p != nil && p.Addr != nil {
		d.remote = p.Addr.String()
	}
	out, err := (*exchangepb.ExchangeResponse)(nil), errOverloaded
	if s.admit() {
		defer s.release()
		out, err = s.exchangeGRPC(ctx, p, in, &d)
	}
	var resp *protocol.Response
	if err == nil {
		resp = &protocol.Response{} // finish needs a non-error outcome only
	}
	if _, err = s.finish(&d, resp, err); err != nil {
		e := s.protocolError(err)
		if e.Code == protocol.ErrTemporarilyUnavailable.Code {
			trailer.Set(trailerRetryAfter, e.RetryAfterHeader())
		}
		_ = grpc.SetTrailer(ctx, trailer)
		return nil, e.GRPCStatus().Err()
	}
	_ = grpc.SetTrailer(ctx, trailer)
	return out, nil
}

func (s *Server) exchangeGRPC(ctx context.Context, p *peer.Peer, in *exchangepb.ExchangeRequest, d *decision) (*exchangepb.ExchangeResponse, error) {
	// A connection HTTPServer handed to the grpc.Server has its TLS state
	// and authentication cache in the peer's AuthInfo; for a call through
	// grpc.Server.ServeHTTP (see Server.ServeHTTP), the AuthInfo is the
	// request's TLS state, and the stream's context derives from the
	// request's, which carries the cache.
	var state *tls.ConnectionState
	var auth *connAuth
	if p != nil {
		switch info := p.AuthInfo.(type) {
		case *grpcAuthInfo:
			state, auth = &info.State, info.auth
		case credentials.TLSInfo:
			state = &info.State
		}
	}
	if auth == nil {
		auth = connAuthFrom(ctx)
	}
	md, _ := metadata.FromIncomingContext(ctx)
	caller, proxy, err := s.authenticate(auth, state, headerOf(md))
	if err != nil {
		return nil, err
	}
	d.caller, d.proxy = caller, proxy
	req, parseErr := requestFromProto(in)
	if parseErr == nil {
		d.req = &req
	}
	if err := s.chargeDecision(d); err != nil {
		return nil, err
	}
	if parseErr != nil {
		return nil, parseErr
	}
	// RFC 6749 §2.3: one authentication method per request, as on /token.
	if len(md.Get("authorization")) > 0 {
		return nil, protocol.ErrInvalidRequest.WithDescription("authenticate with the X509-SVID (tls_client_auth) only")
	}
	resp, err := s.exchange(ctx, caller, &req, d)
	if err != nil {
		return nil, err
	}
	return &exchangepb.ExchangeResponse{
		AccessToken:     resp.AccessToken,
		IssuedTokenType: string(resp.IssuedTokenType),
		TokenType:       resp.TokenType,
		ExpiresIn:       resp.ExpiresIn,
		Scope:           resp.Scope,
	}, nil
}

// headerOf returns the call's metadata as the header it came in (gRPC
// lower-cases the names; forwarded.Policy matches them in any case), for
// the forwarding headers of Config.Forwarded.
func headerOf(md metadata.MD) http.Header {
	if len(md) == 0 {
		return nil
	}
	h := make(http.Header, len(md))
	for k, vs := range md {
		h[k] = vs
	}
	return h
}

// requestFromProto builds a Request from the message through the form's
// requestBuilder, so both APIs accept exactly the same parameters. An
// empty string (proto3 cannot tell it from a field not sent) is a
// parameter omitted, and an empty audience or resource value is dropped,
// as in a form (RFC 6749 §3.2).
func requestFromProto(in *exchangepb.ExchangeRequest) (Request, error) {
	var b requestBuilder
	params := []struct{ key, value string }{
		{protocol.ParamGrantType, in.GetGrantType()},
		{protocol.ParamClientID, in.GetClientId()},
		{protocol.ParamScope, in.GetScope()},
		{protocol.ParamSubjectToken, in.GetSubjectToken()},
		{protocol.ParamSubjectTokenType, in.GetSubjectTokenType()},
		{protocol.ParamActorToken, in.GetActorToken()},
		{protocol.ParamActorTokenType, in.GetActorTokenType()},
		{protocol.ParamRequestedTokenType, in.GetRequestedTokenType()},
	}
	if in.GetImpersonate() {
		params = append(params, struct{ key, value string }{protocol.ParamImpersonate, "true"})
	}
	for _, p := range params {
		if err := b.set(p.key, p.value); err != nil {
			return Request{}, err
		}
	}
	for _, list := range []struct {
		key    string
		values []string
	}{{protocol.ParamAudience, in.GetAudience()}, {protocol.ParamResource, in.GetResource()}} {
		for _, v := range list.values {
			if err := b.set(list.key, v); err != nil {
				return Request{}, err
			}
		}
	}
	return b.req, nil
}
