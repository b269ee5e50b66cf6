package spiffeid

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffegrpc/grpccredentials"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/emptypb"

	"github.com/spiffe-sts/spiffe-sts/internal/testca"
)

const workloadID = "spiffe://example.org/workload"

func TestPeerFromTLS(t *testing.T) {
	ca := testca.New(t, "example.org")
	leaf := ca.SVID(t, workloadID, time.Hour).Certificates[0]
	noURI := ca.Leaf(t)
	twoURIs := ca.Leaf(t, workloadID, "spiffe://example.org/other")
	httpsURI := ca.Leaf(t, "https://example.org/workload")

	for _, tt := range []struct {
		name          string
		overrideState func(s *tls.ConnectionState) *tls.ConnectionState
		expectErr     string
	}{
		{name: "baseline"},
		{
			name:          "nil state",
			overrideState: func(*tls.ConnectionState) *tls.ConnectionState { return nil },
			expectErr:     "spiffeid: peer presented no certificate",
		},
		{
			name:          "no certificate",
			overrideState: func(s *tls.ConnectionState) *tls.ConnectionState { s.PeerCertificates = nil; return s },
			expectErr:     "spiffeid: peer presented no certificate",
		},
		{
			name:          "certificate without URI SAN",
			overrideState: func(s *tls.ConnectionState) *tls.ConnectionState { s.PeerCertificates[0] = noURI; return s },
			expectErr:     "spiffeid: peer certificate has no valid SPIFFE ID: certificate contains no URI SAN",
		},
		{
			name:          "certificate with two URI SANs",
			overrideState: func(s *tls.ConnectionState) *tls.ConnectionState { s.PeerCertificates[0] = twoURIs; return s },
			expectErr:     "spiffeid: peer certificate has no valid SPIFFE ID: certificate contains more than one URI SAN",
		},
		{
			name:          "certificate with non-SPIFFE URI",
			overrideState: func(s *tls.ConnectionState) *tls.ConnectionState { s.PeerCertificates[0] = httpsURI; return s },
			expectErr:     "spiffeid: peer certificate has no valid SPIFFE ID: scheme is missing or invalid",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			state := &tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf, ca.Cert}}
			if tt.overrideState != nil {
				state = tt.overrideState(state)
			}
			p, err := PeerFromTLS(state)
			if tt.expectErr != "" {
				if err == nil || err.Error() != tt.expectErr {
					t.Fatalf("PeerFromTLS error = %v, want %q", err, tt.expectErr)
				}
				if p != (Peer{}) {
					t.Errorf("PeerFromTLS = %+v on error, want zero", p)
				}
				return
			}
			if err != nil {
				t.Fatalf("PeerFromTLS: %v", err)
			}
			if p.ID.String() != workloadID || p.Leaf != leaf {
				t.Errorf("PeerFromTLS = %v, %p; want %s, %p", p.ID, p.Leaf, workloadID, leaf)
			}
		})
	}
}

func TestVerifyPeer(t *testing.T) {
	ca := testca.New(t, "example.org")
	otherCA := testca.New(t, "example.com")
	impostorCA := testca.New(t, "example.org")
	leaf := ca.SVID(t, workloadID, time.Hour).Certificates[0]
	noURI := ca.Leaf(t)
	otherLeaf := otherCA.SVID(t, "spiffe://example.com/workload", time.Hour).Certificates[0]
	impostorLeaf := impostorCA.SVID(t, workloadID, time.Hour).Certificates[0]

	for _, tt := range []struct {
		name            string
		overrideCerts   func(certs []*x509.Certificate) []*x509.Certificate
		overrideBundles func(bundles *x509bundle.Set)
		expectErr       string
		// expectAs, when set, makes expectErr a prefix of our text before
		// the standard-library error, which is checked with errors.As.
		expectAs any
	}{
		{name: "baseline"},
		{
			name:          "no certificate",
			overrideCerts: func([]*x509.Certificate) []*x509.Certificate { return nil },
			expectErr:     "spiffeid: peer presented no certificate",
		},
		{
			name:          "certificate without SPIFFE ID",
			overrideCerts: func([]*x509.Certificate) []*x509.Certificate { return []*x509.Certificate{noURI} },
			expectErr:     "spiffeid: verifying peer certificate: x509svid: could not get leaf SPIFFE ID: certificate contains no URI SAN",
		},
		{
			name:          "untrusted trust domain",
			overrideCerts: func([]*x509.Certificate) []*x509.Certificate { return []*x509.Certificate{otherLeaf} },
			expectErr:     `spiffeid: verifying peer certificate: x509svid: could not get X509 bundle: x509bundle: no X.509 bundle for trust domain "example.com"`,
		},
		{
			name:            "trusted other trust domain",
			overrideCerts:   func([]*x509.Certificate) []*x509.Certificate { return []*x509.Certificate{otherLeaf} },
			overrideBundles: func(s *x509bundle.Set) { s.Add(otherCA.Bundle().X509Bundle()) },
		},
		{
			name:          "signed by another CA for the same trust domain",
			overrideCerts: func([]*x509.Certificate) []*x509.Certificate { return []*x509.Certificate{impostorLeaf} },
			expectErr:     "spiffeid: verifying peer certificate: x509svid: could not verify leaf certificate: ",
			expectAs:      new(x509.UnknownAuthorityError),
		},
		{
			name:          "CA certificate as leaf",
			overrideCerts: func([]*x509.Certificate) []*x509.Certificate { return []*x509.Certificate{ca.Cert} },
			expectErr:     "spiffeid: verifying peer certificate: x509svid: leaf certificate with CA flag set to true",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			certs := []*x509.Certificate{leaf}
			if tt.overrideCerts != nil {
				certs = tt.overrideCerts(certs)
			}
			bundles := x509bundle.NewSet(ca.Bundle().X509Bundle())
			if tt.overrideBundles != nil {
				tt.overrideBundles(bundles)
			}
			p, err := VerifyPeer(certs, bundles)
			if tt.expectAs != nil {
				if err == nil || !strings.HasPrefix(err.Error(), tt.expectErr) || !errors.As(err, tt.expectAs) {
					t.Fatalf("VerifyPeer error = %v, want %q followed by a %T", err, tt.expectErr, tt.expectAs)
				}
			} else if tt.expectErr != "" && (err == nil || err.Error() != tt.expectErr) {
				t.Fatalf("VerifyPeer error = %v, want %q", err, tt.expectErr)
			}
			if tt.expectErr != "" {
				if p != (Peer{}) {
					t.Errorf("VerifyPeer = %+v on error, want zero", p)
				}
				return
			}
			if err != nil {
				t.Fatalf("VerifyPeer: %v", err)
			}
			wantID, _ := spiffeidFromCert(t, certs[0])
			if p.ID != wantID || p.Leaf != certs[0] {
				t.Errorf("VerifyPeer = %v, %p; want %v, %p", p.ID, p.Leaf, wantID, certs[0])
			}
		})
	}

}

func spiffeidFromCert(t *testing.T, cert *x509.Certificate) (spiffeid.ID, error) {
	t.Helper()
	id, err := spiffeid.FromURI(cert.URIs[0])
	if err != nil {
		t.Fatal(err)
	}
	return id, nil
}

func TestPeerFromContext(t *testing.T) {
	ca := testca.New(t, "example.org")
	leaf := ca.SVID(t, workloadID, time.Hour).Certificates[0]
	otherLeaf := ca.SVID(t, "spiffe://example.org/other", time.Hour).Certificates[0]
	noURI := ca.Leaf(t)
	stored := Peer{ID: spiffeid.RequireFromString("spiffe://example.org/other"), Leaf: otherLeaf}
	grpcPeer := func(info credentials.AuthInfo) func(context.Context) context.Context {
		return func(ctx context.Context) context.Context {
			return peer.NewContext(ctx, &peer.Peer{Addr: &net.TCPAddr{}, AuthInfo: info})
		}
	}
	tlsInfo := func(certs ...*x509.Certificate) credentials.TLSInfo {
		return credentials.TLSInfo{State: tls.ConnectionState{PeerCertificates: certs}}
	}

	for _, tt := range []struct {
		name       string
		setup      func(ctx context.Context) context.Context
		expectOK   bool
		expectLeaf *x509.Certificate
	}{
		{name: "grpc TLSInfo", setup: grpcPeer(tlsInfo(leaf, ca.Cert)), expectOK: true, expectLeaf: leaf},
		{name: "grpc *TLSInfo", setup: grpcPeer(func() *credentials.TLSInfo { i := tlsInfo(leaf); return &i }()), expectOK: true, expectLeaf: leaf},
		{name: "grpc nil *TLSInfo", setup: grpcPeer((*credentials.TLSInfo)(nil))},
		{name: "grpc no certificate", setup: grpcPeer(tlsInfo())},
		{name: "grpc certificate without SPIFFE ID", setup: grpcPeer(tlsInfo(noURI))},
		{name: "grpc nil AuthInfo", setup: grpcPeer(nil)},
		{name: "grpc non-TLS AuthInfo", setup: grpcPeer(otherAuthInfo{})},
		{name: "no peer", setup: func(ctx context.Context) context.Context { return ctx }},
		{name: "WithPeer", setup: func(ctx context.Context) context.Context { return WithPeer(ctx, stored) }, expectOK: true, expectLeaf: otherLeaf},
		{
			name: "WithPeer takes precedence over grpc peer",
			setup: func(ctx context.Context) context.Context {
				return WithPeer(grpcPeer(tlsInfo(leaf))(ctx), stored)
			},
			expectOK:   true,
			expectLeaf: otherLeaf,
		},
		{name: "WithPeer zero Peer", setup: func(ctx context.Context) context.Context { return WithPeer(ctx, Peer{}) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, ok := PeerFromContext(tt.setup(t.Context()))
			if ok != tt.expectOK {
				t.Fatalf("PeerFromContext ok = %v, want %v (peer %+v)", ok, tt.expectOK, p)
			}
			if !ok {
				return
			}
			if p.Leaf != tt.expectLeaf {
				t.Errorf("PeerFromContext leaf = %p, want %p", p.Leaf, tt.expectLeaf)
			}
			if want, _ := spiffeidFromCert(t, tt.expectLeaf); p.ID != want {
				t.Errorf("PeerFromContext ID = %v, want %v", p.ID, want)
			}
		})
	}
}

type otherAuthInfo struct{}

func (otherAuthInfo) AuthType() string { return "other" }

// TestPeerFromContextGRPC calls a real in-process gRPC server over bufconn and
// reads the client's identity in the handler.
func TestPeerFromContextGRPC(t *testing.T) {
	ca := testca.New(t, "example.org")
	serverSVID := ca.SVID(t, "spiffe://example.org/sts", time.Hour)
	clientSVID := ca.SVID(t, workloadID, time.Hour)
	bundle := ca.Bundle()

	for _, tt := range []struct {
		name        string
		serverCreds credentials.TransportCredentials
	}{
		{
			name:        "go-spiffe grpccredentials",
			serverCreds: grpccredentials.MTLSServerCredentials(serverSVID, bundle, tlsconfig.AuthorizeAny()),
		},
		{
			name:        "credentials.NewTLS with tlsconfig",
			serverCreds: credentials.NewTLS(tlsconfig.MTLSServerConfig(serverSVID, bundle, tlsconfig.AuthorizeAny())),
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := make(chan Peer, 1)
			srv := grpc.NewServer(
				grpc.Creds(tt.serverCreds),
				grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
					p, ok := PeerFromContext(stream.Context())
					if !ok {
						return errors.New("no peer")
					}
					got <- p
					if err := stream.RecvMsg(&emptypb.Empty{}); err != nil {
						return err
					}
					return stream.SendMsg(&emptypb.Empty{})
				}),
			)
			lis := bufconn.Listen(1 << 16)
			go func() { _ = srv.Serve(lis) }()
			t.Cleanup(srv.Stop)

			conn, err := grpc.NewClient("passthrough:///bufconn",
				grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
				grpc.WithTransportCredentials(grpccredentials.MTLSClientCredentials(clientSVID, bundle, tlsconfig.AuthorizeAny())),
			)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = conn.Close() })

			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			if err := conn.Invoke(ctx, "/test.Service/Method", &emptypb.Empty{}, &emptypb.Empty{}); err != nil {
				t.Fatalf("Invoke: %v", err)
			}
			p := <-got
			if p.ID != clientSVID.ID {
				t.Errorf("peer ID = %v, want %v", p.ID, clientSVID.ID)
			}
			if p.Leaf == nil || !p.Leaf.Equal(clientSVID.Certificates[0]) {
				t.Errorf("peer leaf is not the client's X509-SVID")
			}
		})
	}
}
