package loadgen

import (
	"context"
	"crypto/tls"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/spiffe-sts/spiffe-sts/exchange/exchangepb"
	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
)

// GRPCClient sends token requests over the gRPC API (exchangepb), one
// HTTP/2 connection per worker.
type GRPCClient struct {
	conns    []*grpc.ClientConn
	clients  []exchangepb.TokenExchangeClient
	messages []*exchangepb.ExchangeRequest
}

// NewGRPC returns a client of target's gRPC API with conns connections
// over mTLS with tlsConfig, sending grant. The connections are made on
// first use.
func NewGRPC(target Target, tlsConfig *tls.Config, conns int, grant Grant) (*GRPCClient, error) {
	c := &GRPCClient{messages: grant.messages()}
	for range max(conns, 1) {
		cc, err := grpc.NewClient("passthrough:///sts",
			grpc.WithTransportCredentials(credentials.NewTLS(tlsConfig.Clone())),
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return target.dial(ctx) }))
		if err != nil {
			c.Close()
			return nil, err
		}
		c.conns = append(c.conns, cc)
		c.clients = append(c.clients, exchangepb.NewTokenExchangeClient(cc))
	}
	return c, nil
}

// Do is a DoFunc.
func (c *GRPCClient) Do(ctx context.Context, conn, seq int) string {
	resp, err := c.clients[conn%len(c.clients)].Exchange(ctx, c.messages[seq%len(c.messages)])
	if err == nil {
		if resp.GetAccessToken() == "" {
			return ClassBadResponse
		}
		return ""
	}
	if ctx.Err() != nil {
		return ClassCanceled
	}
	st, _ := status.FromError(err)
	if oauth, ok := protocol.ErrorFromStatus(st); ok {
		return oauth.Code
	}
	if st.Code() == codes.Unavailable {
		// No OAuth error: the connection failed, as ClassTransport is
		// for HTTP (the server's own temporarily_unavailable carries one).
		return ClassTransport
	}
	return "grpc_" + st.Code().String()
}

// Close closes the connections.
func (c *GRPCClient) Close() {
	for _, cc := range c.conns {
		_ = cc.Close()
	}
}
