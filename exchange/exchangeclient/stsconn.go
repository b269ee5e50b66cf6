package exchangeclient

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
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

// svidConn is an stsConn whose connections all present one X509-SVID,
// whose leaf is leaf.
type svidConn struct {
	leaf []byte
	sts  *stsConn
}

// stsFor returns the stsConn that presents svid, the source's current
// X509-SVID. When the SVID has rotated it makes a new one and retires the
// previous one once the requests it carries have ended (after the
// client's timeout): a kept-alive connection would otherwise present the
// old certificate until it expires, and the STS refuses a certificate
// about to expire. The check costs one comparison of the leaf's bytes.
func (c *Client) stsFor(svid *x509svid.SVID) (*stsConn, error) {
	leaf := svid.Certificates[0].Raw
	if cur := c.sts.Load(); cur != nil && bytes.Equal(cur.leaf, leaf) {
		return cur.sts, nil
	}
	c.stsMu.Lock()
	defer c.stsMu.Unlock()
	cur := c.sts.Load()
	if cur != nil && bytes.Equal(cur.leaf, leaf) {
		return cur.sts, nil
	}
	if c.closed.Load() {
		return nil, errClosed
	}
	conn, err := c.dialSTS(svid)
	if err != nil {
		return nil, err
	}
	c.sts.Store(&svidConn{leaf: leaf, sts: conn})
	if cur != nil {
		time.AfterFunc(c.timeout, cur.sts.close)
	}
	return conn, nil
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

// Bounds of the delay between attempts of one token request (send).
const (
	firstRetryDelay = 50 * time.Millisecond
	maxSendDelay    = time.Second
)

// retryBackoff is the delay before each next attempt of one token
// request: 50 ms doubling up to 1 s, each drawn uniformly from its upper
// half so that many clients of one restarted server spread out.
type retryBackoff struct{ delay time.Duration }

func (b *retryBackoff) next() time.Duration {
	switch {
	case b.delay == 0:
		b.delay = firstRetryDelay
	case b.delay < maxSendDelay:
		b.delay = min(2*b.delay, maxSendDelay)
	}
	half := b.delay / 2
	return half + rand.N(half+1)
}

// unavailableError is an HTTP 503 answer from the token endpoint: the
// server (or a proxy in front of it) is overloaded, starting or shutting
// down, or cannot write its audit trail. It unwraps to the answer's
// protocol.Error (temporarily_unavailable) when it carries one.
type unavailableError struct{ err error }

func (e unavailableError) Error() string { return e.err.Error() }
func (e unavailableError) Unwrap() error { return e.err }

// transient reports whether err means the STS is briefly away, so that
// the same request may succeed when sent again:
//
//   - 503 (temporarily_unavailable, RFC 6749 §4.1.2.1), over HTTP;
//   - gRPC Unavailable, with or without a temporarily_unavailable
//     ErrorInfo (what gRPC reports for a refused or lost connection);
//   - a connection that could not be made, was refused, reset, or closed
//     before the answer (EOF): a server restarting or draining. HTTP/2
//     GOAWAY of a request the server did not process is retried by
//     net/http itself.
//
// A deadline or cancellation is not transient: the caller's budget is
// spent.
func transient(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return false
	}
	var unavailable unavailableError
	if errors.As(err, &unavailable) {
		return true
	}
	var oauthErr protocol.Error
	if errors.As(err, &oauthErr) {
		return oauthErr.Code == protocol.ErrTemporarilyUnavailable.Code
	}
	if st, ok := status.FromError(err); ok && st.Code() == codes.Unavailable {
		return true
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}
