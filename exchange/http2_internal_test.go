package exchange

import (
	"errors"
	"net"
	"testing"
	"time"
)

// TestConnListenerClosedBeforeAccept checks that a listener closed before
// its first Accept (GracefulStop between grpc.Server.Serve and Accept)
// does not report the connection handed off, so that serveGRPCConn
// returns instead of waiting for a Close that will never come.
func TestConnListenerClosedBeforeAccept(t *testing.T) {
	lis := &connListener{conn: &grpcConn{closed: make(chan struct{})}, closed: make(chan struct{})}
	_ = lis.Close()
	done := make(chan error, 1)
	go func() {
		_, err := lis.Accept()
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept blocked on a closed listener")
	}
	if lis.handedOff() {
		t.Fatal("handedOff after an Accept that returned no connection")
	}
}

// TestHandedOffCredentialsInfo checks that the credentials claim no TLS
// version: the connection's own is in each peer's TLSInfo.State.
func TestHandedOffCredentialsInfo(t *testing.T) {
	info := handedOffCredentials{}.Info()
	if info.SecurityProtocol != "tls" || info.SecurityVersion != "" {
		t.Fatalf("Info = %+v, want protocol tls and no version", info)
	}
}
