package exchangeclient

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/spiffe-sts/spiffe-sts/exchange/exchangepb"
	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
)

// stsConn sends token requests to the STS presenting the SVIDs of one
// source: over HTTP to the token endpoint, or, with WithGRPC, over the
// gRPC API on the same listener.
type stsConn struct {
	http      *http.Client
	transport *http.Transport
	grpc      *grpc.ClientConn // nil over HTTP
	api       exchangepb.TokenExchangeClient
}

// dialSTS returns an stsConn whose connections present the SVIDs of svids
// and verify the server with the client's bundles and authorizer. Given a
// single *x509svid.SVID (a static source) every connection presents
// exactly that certificate, so the tokens it obtains are bound to it. A
// gRPC connection is made lazily, on the first request.
func (c *Client) dialSTS(svids x509svid.Source) (*stsConn, error) {
	if !c.useGRPC {
		hc, transport := c.httpClient(svids)
		return &stsConn{http: hc, transport: transport}, nil
	}
	u, err := url.Parse(c.tokenURL)
	if err != nil {
		return nil, fmt.Errorf("exchangeclient: issuer URL: %w", err)
	}
	target := u.Host
	if u.Port() == "" {
		target = net.JoinHostPort(u.Hostname(), "443")
	}
	// credentials.NewTLS adds ALPN h2, which gRPC needs; the go-spiffe
	// configuration does the SPIFFE verification of the server.
	creds := credentials.NewTLS(tlsconfig.MTLSClientConfig(svids, c.source, c.authorizer))
	conn, err := grpc.NewClient("dns:///"+target, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, fmt.Errorf("exchangeclient: gRPC client for %s: %w", target, err)
	}
	return &stsConn{grpc: conn, api: exchangepb.NewTokenExchangeClient(conn)}, nil
}

// close releases the connections: the idle ones over HTTP, the gRPC
// connection (and with it the calls in flight) over gRPC.
func (s *stsConn) close() {
	if s.grpc != nil {
		_ = s.grpc.Close()
		return
	}
	s.transport.CloseIdleConnections()
}

// exchangeGRPC sends params over the gRPC API. A refusal is the
// protocol.Error the status carries (protocol.ErrorFromStatus).
func (c *Client) exchangeGRPC(ctx context.Context, api exchangepb.TokenExchangeClient, p *wireRequest, requestedScope []string) (*Token, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	sent := c.clock.Now()
	resp, err := api.Exchange(ctx, &exchangepb.ExchangeRequest{
		GrantType:          p.grantType.String(),
		ClientId:           p.clientID,
		Scope:              p.scope,
		Audience:           p.audience,
		Resource:           p.resource,
		SubjectToken:       p.subjectToken,
		SubjectTokenType:   p.subjectTokenType.String(),
		RequestedTokenType: p.requestedTokenType.String(),
		Impersonate:        p.impersonate,
	})
	if err != nil {
		if oauthErr, ok := protocol.ErrorFromStatus(status.Convert(err)); ok {
			return nil, oauthErr
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, fmt.Errorf("exchangeclient: token request: %w: %w", err, ctxErr)
		}
		return nil, fmt.Errorf("exchangeclient: token request: %w", err)
	}
	if resp == nil {
		return nil, errors.New("exchangeclient: empty gRPC token response")
	}
	return checkTokenResponse(&protocol.Response{
		AccessToken:     resp.GetAccessToken(),
		IssuedTokenType: protocol.TokenType(resp.GetIssuedTokenType()),
		TokenType:       resp.GetTokenType(),
		ExpiresIn:       resp.GetExpiresIn(),
		Scope:           resp.GetScope(),
	}, sent, requestedScope)
}
