package exchange

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"net"
	"slices"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/spiffe-sts/spiffe-sts/internal/h2sniff"
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
	if info != (credentials.ProtocolInfo{SecurityProtocol: "tls"}) {
		t.Fatalf("Info = %+v, want protocol tls and no version", info)
	}
}

// TestServeGRPCConnStopped checks that a connection that comes to a
// stopped grpc.Server gets a GOAWAY that says its first call was not
// processed, and that serveGRPCConn returns it.
func TestServeGRPCConnStopped(t *testing.T) {
	s := &Server{grpc: grpc.NewServer(grpc.Creds(handedOffCredentials{}))}
	s.grpc.Stop()
	client, server := net.Pipe()
	defer client.Close()
	defer server.Close()
	var sent bytes.Buffer
	sent.WriteString(http2.ClientPreface)
	fr := http2.NewFramer(&sent, nil)
	_ = fr.WriteSettings()
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, hf := range [][2]string{{":method", "POST"}, {":scheme", "https"}, {":path", "/x/y"}, {"content-type", "application/grpc"}} {
		_ = enc.WriteField(hpack.HeaderField{Name: hf[0], Value: hf[1]})
	}
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block.Bytes(), EndHeaders: true})
	go func() { _, _ = client.Write(sent.Bytes()) }()
	received := make(chan []http2.FrameType, 1)
	go func() {
		fr := http2.NewFramer(nil, client)
		var got []http2.FrameType
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				received <- got
				return
			}
			got = append(got, f.Header().Type)
			if ga, ok := f.(*http2.GoAwayFrame); ok && ga.LastStreamID == 0 && ga.ErrCode == http2.ErrCodeNo {
				_ = client.Close()
			}
		}
	}()
	sniffed, err := h2sniff.Sniff(context.Background(), pipeConn{server}, h2sniff.Options{})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { s.serveGRPCConn(nil, sniffed.Replay()); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("serveGRPCConn did not return")
	}
	_ = server.Close()
	if got := <-received; !slices.Equal(got, []http2.FrameType{http2.FrameSettings, http2.FrameGoAway}) {
		t.Fatalf("the client received %v, want SETTINGS and GOAWAY(0, NO_ERROR)", got)
	}
}

type pipeConn struct{ net.Conn }

func (pipeConn) ConnectionState() tls.ConnectionState { return tls.ConnectionState{} }
