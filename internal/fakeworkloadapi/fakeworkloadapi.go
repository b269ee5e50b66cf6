// Package fakeworkloadapi is a SPIFFE Workload API server on a Unix
// socket for tests: it streams one X509-SVID with the bundle of an in-test
// CA and that CA's JWT bundle, and streams again when the SVID is replaced.
package fakeworkloadapi

import (
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"

	"github.com/spiffe-sts/spiffe-sts/internal/testca"
)

// WorkloadAPI is a Workload API on a Unix socket that streams one
// X509-SVID and the bundle of one CA, and streams again on SetSVID.
type WorkloadAPI struct {
	workload.UnimplementedSpiffeWorkloadAPIServer
	// Addr is the unix:// address of the socket.
	Addr string
	ca   *testca.CA

	mu      sync.Mutex
	svid    *x509svid.SVID
	changed chan struct{} // closed and replaced by SetSVID
}

// Start serves the Workload API for svid, with ca's bundles, until the
// test ends.
func Start(t testing.TB, ca *testca.CA, svid *x509svid.SVID) *WorkloadAPI {
	t.Helper()
	// t.TempDir can exceed the 108 bytes of a socket path.
	dir, err := os.MkdirTemp("", "sts")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "agent.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	w := &WorkloadAPI{Addr: "unix://" + path, ca: ca, svid: svid, changed: make(chan struct{})}
	srv := grpc.NewServer()
	workload.RegisterSpiffeWorkloadAPIServer(srv, w)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return w
}

// SetSVID replaces the SVID and streams it to the watchers.
func (w *WorkloadAPI) SetSVID(svid *x509svid.SVID) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.svid = svid
	close(w.changed)
	w.changed = make(chan struct{})
}

func (w *WorkloadAPI) current() (*x509svid.SVID, <-chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.svid, w.changed
}

func (w *WorkloadAPI) FetchX509SVID(_ *workload.X509SVIDRequest, stream grpc.ServerStreamingServer[workload.X509SVIDResponse]) error {
	for {
		svid, changed := w.current()
		certs, key, err := svid.MarshalRaw()
		if err != nil {
			return err
		}
		err = stream.Send(&workload.X509SVIDResponse{Svids: []*workload.X509SVID{{
			SpiffeId:    svid.ID.String(),
			X509Svid:    certs,
			X509SvidKey: key,
			Bundle:      concatDER(w.ca.Bundle().X509Authorities()),
		}}})
		if err != nil {
			return err
		}
		select {
		case <-changed:
		case <-stream.Context().Done():
			return nil
		}
	}
}

func (w *WorkloadAPI) FetchJWTBundles(_ *workload.JWTBundlesRequest, stream grpc.ServerStreamingServer[workload.JWTBundlesResponse]) error {
	jwks, err := w.ca.Bundle().JWTBundle().Marshal()
	if err != nil {
		return err
	}
	err = stream.Send(&workload.JWTBundlesResponse{Bundles: map[string][]byte{w.ca.TrustDomain.String(): jwks}})
	if err != nil {
		return err
	}
	<-stream.Context().Done()
	return nil
}

func concatDER(certs []*x509.Certificate) []byte {
	var der []byte
	for _, c := range certs {
		der = append(der, c.Raw...)
	}
	return der
}
