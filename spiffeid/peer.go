package spiffeid

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"reflect"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// Peer is the authenticated SPIFFE identity of the other end of an mTLS
// connection.
type Peer struct {
	// ID is the SPIFFE ID from the URI SAN of Leaf.
	ID spiffeid.ID
	// Leaf is the peer's X509-SVID leaf certificate. Token issuers bind
	// tokens to it (RFC 8705 §3.1).
	Leaf *x509.Certificate
}

var errNoCertificate = errors.New("spiffeid: peer presented no certificate")

// PeerFromTLS returns the peer of a connection whose certificate chain the
// TLS configuration has already verified, for example one built with
// go-spiffe's tlsconfig.MTLSServerConfig. It reads the SPIFFE ID of the leaf
// in state.PeerCertificates and does not verify the chain itself: use
// [VerifyPeer] when the TLS layer only requests client certificates.
func PeerFromTLS(state *tls.ConnectionState) (Peer, error) {
	if state == nil || len(state.PeerCertificates) == 0 {
		return Peer{}, errNoCertificate
	}
	leaf := state.PeerCertificates[0]
	id, err := x509svid.IDFromCert(leaf)
	if err != nil {
		return Peer{}, fmt.Errorf("spiffeid: peer certificate has no valid SPIFFE ID: %w", err)
	}
	return Peer{ID: id, Leaf: leaf}, nil
}

// VerifyPeer verifies the presented chain (leaf first) against bundles with
// x509svid.Verify and returns the peer. Servers that request but do not
// require client certificates at the TLS layer (RFC 8705 §2.1.2, where the
// authorization server itself checks the certificate against the trusted
// SPIFFE bundles) call it with state.PeerCertificates.
func VerifyPeer(certs []*x509.Certificate, bundles x509bundle.Source) (Peer, error) {
	if len(certs) == 0 {
		return Peer{}, errNoCertificate
	}
	id, _, err := x509svid.Verify(certs, bundles)
	if err != nil {
		return Peer{}, fmt.Errorf("spiffeid: verifying peer certificate: %w", err)
	}
	return Peer{ID: id, Leaf: certs[0]}, nil
}

type peerContextKey struct{}

// WithPeer returns a copy of ctx that carries p. HTTP middleware that has
// authenticated the client with [PeerFromTLS] or [VerifyPeer] stores the
// result with WithPeer for [PeerFromContext].
func WithPeer(ctx context.Context, p Peer) context.Context {
	return context.WithValue(ctx, peerContextKey{}, p)
}

// PeerFromContext returns the authenticated peer of a request. It first
// looks for a Peer stored with [WithPeer]. Otherwise it reads the gRPC peer
// (google.golang.org/grpc/peer) and, like go-spiffe's
// grpccredentials.PeerIDFromContext, takes the SPIFFE ID of the leaf
// certificate from its credentials.TLSInfo. Connections made with go-spiffe's
// grpccredentials and with credentials.NewTLS are both understood.
//
// The gRPC transport credentials must verify client certificates (go-spiffe's
// grpccredentials.MTLSServerCredentials or credentials.NewTLS with
// tlsconfig.MTLSServerConfig); PeerFromContext trusts the chain as verified.
// It returns false when there is no peer or the peer has no SPIFFE ID.
func PeerFromContext(ctx context.Context) (Peer, bool) {
	if p, ok := ctx.Value(peerContextKey{}).(Peer); ok {
		return p, !p.ID.IsZero() && p.Leaf != nil
	}
	gp, ok := peer.FromContext(ctx)
	if !ok || gp.AuthInfo == nil {
		return Peer{}, false
	}
	info, ok := tlsInfoFrom(gp.AuthInfo)
	if !ok {
		return Peer{}, false
	}
	p, err := PeerFromTLS(&info.State)
	return p, err == nil
}

// tlsInfoFrom extracts the TLS connection information from gRPC AuthInfo.
// go-spiffe's grpccredentials wraps credentials.TLSInfo in an unexported
// struct that embeds it as the exported field AuthInfo; reflection reaches
// it without depending on the wrapper's type.
func tlsInfoFrom(info credentials.AuthInfo) (credentials.TLSInfo, bool) {
	for range 2 { // at most one level of wrapping
		switch v := info.(type) {
		case credentials.TLSInfo:
			return v, true
		case *credentials.TLSInfo:
			if v == nil {
				return credentials.TLSInfo{}, false
			}
			return *v, true
		}
		rv := reflect.ValueOf(info)
		if rv.Kind() != reflect.Struct {
			return credentials.TLSInfo{}, false
		}
		f := rv.FieldByName("AuthInfo")
		if !f.IsValid() || !f.CanInterface() {
			return credentials.TLSInfo{}, false
		}
		inner, ok := f.Interface().(credentials.AuthInfo)
		if !ok || inner == nil {
			return credentials.TLSInfo{}, false
		}
		info = inner
	}
	return credentials.TLSInfo{}, false
}
