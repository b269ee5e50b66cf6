package exchangeclient

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// AuthInfo is the credentials.AuthInfo of a connection made with
// Tokens.TransportCredentials.
type AuthInfo struct {
	credentials.TLSInfo
	// Leaf is the client certificate this side presented in the
	// handshake. Calls on the connection carry tokens bound to it.
	Leaf *x509.Certificate

	entry *entry // the Tokens entry of Leaf; nil when built elsewhere
}

// TransportCredentials returns gRPC client credentials for mTLS with the
// client's X509-SVID, verifying the server with the client's bundles and
// authorizer (for example tlsconfig.AuthorizeID of the resource server).
//
// Each connection presents the SVID that is current when it is made and
// keeps it for its whole life; its AuthInfo is an *AuthInfo whose Leaf is
// that certificate. Right after a rotation, until Tokens has requested the
// new certificate's token (one STS round trip), new connections still
// present the previous, valid certificate, so no call waits for a token.
//
// Use it with PerRPCCredentials, which attaches the token bound to the
// certificate of the call's connection, or take both from
// GRPCDialOptions. The credentials are client-side only. With WithSidecar
// they refuse every handshake: use GRPCDialOptions.
func (t *Tokens) TransportCredentials(authorizer tlsconfig.Authorizer) credentials.TransportCredentials {
	return &transportCredentials{t: t, authorizer: authorizer}
}

type transportCredentials struct {
	t          *Tokens
	authorizer tlsconfig.Authorizer
	serverName string
}

// ClientHandshake presents exactly one SVID, chosen before the handshake,
// so the AuthInfo's Leaf is the certificate the server saw.
func (c *transportCredentials) ClientHandshake(ctx context.Context, authority string, rawConn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	if c.t.sidecar != nil {
		return nil, nil, errSidecarNoTLS
	}
	e, err := c.t.handshakeEntry()
	if err != nil {
		return nil, nil, err
	}
	serverName := c.serverName
	if serverName == "" {
		if serverName, _, err = net.SplitHostPort(authority); err != nil {
			serverName = authority
		}
	}
	cfg := &tls.Config{
		ServerName: serverName,
		NextProtos: []string{"h2"},
		MinVersion: tls.VersionTLS12,
	}
	tlsconfig.HookTLSClientConfig(cfg, c.t.c.source, c.authorizer)
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return e.tlsCert, nil }

	conn := tls.Client(rawConn, cfg)
	if err := conn.HandshakeContext(ctx); err != nil {
		conn.Close()
		return nil, nil, fmt.Errorf("exchangeclient: TLS handshake: %w", err)
	}
	state := conn.ConnectionState()
	// gRPC runs over HTTP/2 only, which needs ALPN.
	if state.NegotiatedProtocol != "h2" {
		conn.Close()
		return nil, nil, errors.New("exchangeclient: the server did not negotiate HTTP/2 (ALPN h2)")
	}
	info := &AuthInfo{
		TLSInfo: credentials.TLSInfo{
			State:          state,
			CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.PrivacyAndIntegrity},
		},
		Leaf:  e.leaf,
		entry: e,
	}
	if len(state.PeerCertificates) > 0 {
		if id, err := x509svid.IDFromCert(state.PeerCertificates[0]); err == nil {
			info.SPIFFEID = id.URL()
		}
	}
	return conn, info, nil
}

func (c *transportCredentials) ServerHandshake(rawConn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("exchangeclient: TransportCredentials are for clients only")
}

func (c *transportCredentials) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls", ServerName: c.serverName}
}

func (c *transportCredentials) Clone() credentials.TransportCredentials {
	clone := *c
	return &clone
}

// OverrideServerName sets the TLS server name (SNI); gRPC no longer calls
// it.
func (c *transportCredentials) OverrideServerName(name string) error {
	c.serverName = name
	return nil
}

// PerRPCCredentials returns gRPC per-call credentials that attach
// "authorization: Bearer <token>" with the token bound to the certificate
// of the call's connection. The connection must have been made with
// TransportCredentials (of this or of another Tokens on the same source);
// otherwise the call fails with codes.Unauthenticated. Another Tokens'
// PerRPCCredentials, for a different audience, can be given per call with
// grpc.PerRPCCredentials on the same connection.
//
// A call waits for a token only when none is kept for its certificate; a
// failure then fails the call with codes.Unauthenticated, whose message
// carries the STS's OAuth error. With WithSidecar they fail every call:
// use GRPCDialOptions, which re-binds the token when the sidecar's
// certificate rotates.
func (t *Tokens) PerRPCCredentials() credentials.PerRPCCredentials {
	return perRPCCredentials{t: t}
}

type perRPCCredentials struct{ t *Tokens }

var errNotOurConnection = status.Error(codes.Unauthenticated,
	"exchangeclient: the connection was not made with Tokens.TransportCredentials, so the certificate to bind the token to is unknown")

var errSidecarPerRPC = status.Error(codes.Unauthenticated,
	"exchangeclient: with WithSidecar, make the connection with Tokens.GRPCDialOptions, which re-binds the token when the sidecar's certificate rotates")

// GetRequestMetadata allocates only the map it returns when a token is
// kept.
func (p perRPCCredentials) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	if p.t.sidecar != nil {
		return nil, errSidecarPerRPC
	}
	ri, _ := credentials.RequestInfoFromContext(ctx)
	info, ok := ri.AuthInfo.(*AuthInfo)
	if !ok || info.Leaf == nil {
		return nil, errNotOurConnection
	}
	e := info.entry
	if e == nil || e.owner != p.t {
		e = p.t.lookup(info.Leaf)
	}
	h, err := p.t.token(ctx, e, info.Leaf)
	if err != nil {
		return nil, rpcTokenError(ctx, err)
	}
	return map[string]string{"authorization": h.header}, nil
}

// rpcTokenError is the status that fails a call for which no token could
// be had: the call's own cancellation or deadline as such, anything else
// (a refusal by the STS among them) as codes.Unauthenticated, whose
// message carries the STS's OAuth error.
func rpcTokenError(ctx context.Context, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil && (errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		return status.FromContextError(ctxErr).Err()
	}
	return status.Error(codes.Unauthenticated, err.Error())
}

func (perRPCCredentials) RequireTransportSecurity() bool { return true }
