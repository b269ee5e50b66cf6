package h2sniff_test

//lint:file-ignore SA1019 net/http (Go 1.26) cannot serve HTTP/2 on a net.Conn that is not a *tls.Conn, as the sniffed connection is; x/net's server is the one net/http bundles.

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/spiffe-sts/spiffe-sts/internal/h2sniff"
	"github.com/spiffe-sts/spiffe-sts/internal/testca"
)

// frames builds an HTTP/2 byte stream.
type frames struct {
	buf bytes.Buffer
	fr  *http2.Framer
}

func newFrames() *frames {
	f := &frames{}
	f.fr = http2.NewFramer(&f.buf, nil)
	return f
}

func (f *frames) preface() *frames { f.buf.WriteString(http2.ClientPreface); return f }
func (f *frames) settings() *frames {
	_ = f.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
	return f
}
func (f *frames) ack() *frames    { _ = f.fr.WriteSettingsAck(); return f }
func (f *frames) window() *frames { _ = f.fr.WriteWindowUpdate(0, 1<<20); return f }
func (f *frames) ping() *frames   { _ = f.fr.WritePing(false, [8]byte{1, 2, 3}); return f }
func (f *frames) pong() *frames   { _ = f.fr.WritePing(true, [8]byte{1, 2, 3}); return f }
func (f *frames) data() *frames {
	_ = f.fr.WriteData(1, true, []byte("grant_type=client_credentials"))
	return f
}

// headers writes a request's HEADERS frame with contentType (none when
// empty), split into CONTINUATION frames of at most split bytes when
// split > 0.
func (f *frames) headers(contentType string, split int) *frames {
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, hf := range [][2]string{{":method", "POST"}, {":scheme", "https"}, {":authority", "sts"}, {":path", "/token"}} {
		_ = enc.WriteField(hpack.HeaderField{Name: hf[0], Value: hf[1]})
	}
	if contentType != "" {
		_ = enc.WriteField(hpack.HeaderField{Name: "content-type", Value: contentType})
	}
	b := block.Bytes()
	if split <= 0 || split >= len(b) {
		_ = f.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: b, EndHeaders: true})
		return f
	}
	_ = f.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: b[:split]})
	for b = b[split:]; len(b) > 0; {
		n := min(split, len(b))
		_ = f.fr.WriteContinuation(1, n == len(b), b[:n])
		b = b[n:]
	}
	return f
}

func (f *frames) bytes() []byte { return bytes.Clone(f.buf.Bytes()) }

// scriptedConn is a TLSConn that reads script, in reads of at most chunk
// bytes, and records what is written.
type scriptedConn struct {
	net.Conn // nil: only the methods below are used
	r        io.Reader
	chunk    int
	written  bytes.Buffer
}

func (c *scriptedConn) Read(p []byte) (int, error) {
	if len(p) > c.chunk {
		p = p[:c.chunk]
	}
	return c.r.Read(p)
}
func (c *scriptedConn) Write(p []byte) (int, error)          { return c.written.Write(p) }
func (c *scriptedConn) SetDeadline(time.Time) error          { return nil }
func (c *scriptedConn) ConnectionState() tls.ConnectionState { return tls.ConnectionState{} }

// emptySettings is the frame Sniff writes: SETTINGS with no parameter.
var emptySettings = []byte{0, 0, 0, 4, 0, 0, 0, 0, 0}

// TestReplay checks what each replay returns: the bytes as sent, and the
// same bytes without the first SETTINGS ACK, wherever it comes and however
// the reads split the frames.
func TestReplay(t *testing.T) {
	tests := []struct {
		name        string
		sent        []byte // sniffed, then read from the replay
		later       []byte // sent after the sniffed bytes
		withoutAck  []byte // what ReplayWithoutAck returns of sent+later
		replay      []byte // what Replay returns, when not sent+later
		written     []byte // what Sniff writes, when not emptySettings
		contentType string
	}{{
		name:        "ack before headers",
		sent:        newFrames().preface().settings().window().ack().headers("application/grpc", 0).bytes(),
		later:       newFrames().data().ack().bytes(), // the second ACK is the real server's
		withoutAck:  newFrames().preface().settings().window().headers("application/grpc", 0).data().ack().bytes(),
		contentType: "application/grpc",
	}, {
		name:        "ack after headers",
		sent:        newFrames().preface().settings().window().headers("application/x-www-form-urlencoded", 0).bytes(),
		later:       newFrames().data().ping().ack().ping().ack().bytes(),
		withoutAck:  newFrames().preface().settings().window().headers("application/x-www-form-urlencoded", 0).data().ping().ping().ack().bytes(),
		contentType: "application/x-www-form-urlencoded",
	}, {
		name:        "headers in continuations, no ack",
		sent:        newFrames().preface().settings().headers("application/grpc+proto", 7).bytes(),
		later:       newFrames().data().bytes(),
		withoutAck:  newFrames().preface().settings().headers("application/grpc+proto", 7).data().bytes(),
		contentType: "application/grpc+proto",
	}, {
		name:       "no content type",
		sent:       newFrames().preface().settings().headers("", 0).bytes(),
		later:      newFrames().ack().bytes(),
		withoutAck: newFrames().preface().settings().headers("", 0).bytes(),
	}, {
		// A client that connects ahead of its first call sends keepalive
		// PINGs: Sniff answers them, and leaves them out of the replay.
		name:        "pings before headers",
		sent:        newFrames().preface().settings().ping().ack().pong().ping().headers("application/grpc", 0).bytes(),
		later:       newFrames().ping().bytes(),
		withoutAck:  newFrames().preface().settings().pong().headers("application/grpc", 0).ping().bytes(),
		replay:      newFrames().preface().settings().ack().pong().headers("application/grpc", 0).ping().bytes(),
		written:     append(bytes.Clone(emptySettings), newFrames().pong().pong().bytes()...),
		contentType: "application/grpc",
	}}
	for _, tc := range tests {
		for _, chunk := range []int{1, 4, 9, 10, 4096} {
			all := append(bytes.Clone(tc.sent), tc.later...)
			sniff := func(t *testing.T) *h2sniff.Sniffed {
				conn := &scriptedConn{r: bytes.NewReader(all), chunk: chunk}
				sniffed, err := h2sniff.Sniff(context.Background(), conn, h2sniff.Options{})
				if err != nil {
					t.Fatal(err)
				}
				if sniffed.ContentType != tc.contentType || sniffed.StreamError {
					t.Errorf("content type %q, stream error %v; want %q", sniffed.ContentType, sniffed.StreamError, tc.contentType)
				}
				written := emptySettings
				if tc.written != nil {
					written = tc.written
				}
				if !bytes.Equal(conn.written.Bytes(), written) {
					t.Errorf("Sniff wrote %x, want %x", conn.written.Bytes(), written)
				}
				return sniffed
			}
			t.Run(tc.name+"/chunk "+strconv.Itoa(chunk), func(t *testing.T) {
				sniffed := sniff(t)
				got, err := io.ReadAll(chunked{sniffed.ReplayWithoutAck(), chunk})
				if err != nil || !bytes.Equal(got, tc.withoutAck) {
					t.Errorf("ReplayWithoutAck = %x, %v;\nwant %x", got, err, tc.withoutAck)
				}
				sniffed = sniff(t)
				replay := all
				if tc.replay != nil {
					replay = tc.replay
				}
				got, err = io.ReadAll(chunked{sniffed.Replay(), chunk})
				if err != nil || !bytes.Equal(got, replay) {
					t.Errorf("Replay = %x, %v;\nwant %x", got, err, replay)
				}
			})
		}
	}
}

// chunked reads r in reads of at most n bytes.
type chunked struct {
	r io.Reader
	n int
}

func (c chunked) Read(p []byte) (int, error) { return c.r.Read(p[:min(len(p), c.n)]) }

// TestSniffStreamError checks that malformed request headers, which a
// server answers by resetting the stream, are reported as such.
func TestSniffStreamError(t *testing.T) {
	f := newFrames().preface().settings()
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	_ = enc.WriteField(hpack.HeaderField{Name: ":method", Value: "POST"})
	_ = enc.WriteField(hpack.HeaderField{Name: "Content-Type", Value: "application/grpc"}) // upper case: RFC 9113 §8.2.1
	_ = f.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block.Bytes(), EndHeaders: true})
	sniffed, err := h2sniff.Sniff(context.Background(), &scriptedConn{r: bytes.NewReader(f.bytes()), chunk: 4096}, h2sniff.Options{})
	if err != nil || !sniffed.StreamError {
		t.Fatalf("Sniff = %+v, %v; want a stream error", sniffed, err)
	}
}

// TestSniffRefuses checks that what is not an HTTP/2 request within the
// bounds fails the sniff.
func TestSniffRefuses(t *testing.T) {
	many := newFrames().preface().settings()
	for range 1000 {
		many.ping()
	}
	big := newFrames().preface().settings()
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	_ = enc.WriteField(hpack.HeaderField{Name: ":method", Value: "POST"})
	_ = enc.WriteField(hpack.HeaderField{Name: "x-big", Value: strings.Repeat("a", 15000)})
	_ = big.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block.Bytes(), EndHeaders: true})
	// A field indexed in the dynamic table (RFC 7541 §2.3.2), then sent
	// again by index: 3 KiB once, ten times in the header list, which
	// the decoder truncates, well under the byte limit.
	repeated := newFrames().preface().settings()
	block.Reset()
	_ = enc.WriteField(hpack.HeaderField{Name: ":method", Value: "POST"})
	for range 10 {
		_ = enc.WriteField(hpack.HeaderField{Name: "x-repeated", Value: strings.Repeat("b", 3000)})
	}
	_ = repeated.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block.Bytes(), EndHeaders: true})
	if len(repeated.bytes()) > 4096 {
		t.Fatalf("the repeated field takes %d bytes", len(repeated.bytes()))
	}
	continuationFirst := newFrames().preface().settings()
	_ = continuationFirst.fr.WriteContinuation(1, true, []byte{0x82})

	tests := []struct {
		name      string
		sent      []byte
		maxBytes  int
		expectErr error  // errors.Is
		expectMsg string // or a substring of the error
	}{
		{name: "HTTP/1.1", sent: []byte("GET / HTTP/1.1\r\nHost: sts\r\n\r\n"), expectErr: h2sniff.ErrBadPreface},
		{name: "garbage", sent: bytes.Repeat([]byte{0xff}, 100), expectErr: h2sniff.ErrBadPreface},
		{name: "short", sent: []byte("PRI * HTTP/2.0"), expectErr: io.ErrUnexpectedEOF},
		{name: "no headers before the limit", sent: many.bytes(), maxBytes: 4096, expectErr: h2sniff.ErrTooLong},
		{name: "header list over the limit", sent: big.bytes(), maxBytes: 8192, expectErr: h2sniff.ErrTooLong},
		{name: "header list decoded over the limit", sent: repeated.bytes(), maxBytes: 8192, expectErr: h2sniff.ErrTooLong},
		{name: "continuation without headers", sent: continuationFirst.bytes(), expectMsg: "PROTOCOL_ERROR"},
		{name: "frame over the initial size", sent: append(newFrames().preface().bytes(), 0, 0x40, 1, 4, 0, 0, 0, 0, 0), expectErr: http2.ErrFrameTooLarge},
		{name: "end of connection before headers", sent: newFrames().preface().settings().window().bytes(), expectErr: io.EOF},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h2sniff.Sniff(context.Background(), &scriptedConn{r: bytes.NewReader(tc.sent), chunk: 4096}, h2sniff.Options{MaxBytes: tc.maxBytes})
			switch {
			case err == nil:
				t.Fatal("Sniff succeeded")
			case tc.expectErr != nil && !errors.Is(err, tc.expectErr):
				t.Fatalf("Sniff: %v, want %v", err, tc.expectErr)
			case tc.expectErr == nil && !strings.Contains(err.Error(), tc.expectMsg):
				t.Fatalf("Sniff: %v, want %q", err, tc.expectMsg)
			}
		})
	}
}

// TestSniffDeadlines checks that a client that sends no preface fails the
// sniff at PrefaceDeadline, and one that sends no request at
// RequestDeadline, with a GOAWAY then (RFC 9113 §6.8): it may retry its
// request elsewhere.
func TestSniffDeadlines(t *testing.T) {
	const short, long = 100 * time.Millisecond, 600 * time.Millisecond
	tests := []struct {
		name     string
		sent     []byte
		min, max time.Duration // when Sniff returns
		frames   string        // what the client receives
	}{
		{name: "no preface", sent: []byte("PRI * HTTP/2.0\r\n"), min: short, max: long, frames: ""},
		{name: "no request", sent: newFrames().preface().settings().ping().bytes(), min: long, max: 5 * time.Second, frames: "SETTINGS PING+ACK GOAWAY"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			client, server := net.Pipe()
			defer client.Close()
			defer server.Close()
			go func() { _, _ = client.Write(tc.sent) }()
			received := receive(client)
			start := time.Now()
			_, err := h2sniff.Sniff(context.Background(), pipeConn{server}, h2sniff.Options{PrefaceDeadline: start.Add(short), RequestDeadline: start.Add(long)})
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("Sniff: %v, want the deadline", err)
			}
			if d := time.Since(start); d < tc.min || d > tc.max {
				t.Fatalf("Sniff returned after %v, want %v to %v", d, tc.min, tc.max)
			}
			server.Close()
			if got := <-received; got != tc.frames {
				t.Errorf("the client received %q, want %q", got, tc.frames)
			}
		})
	}
}

// TestSniffStopped checks that Sniff returns as soon as its context is
// done, whatever it was waiting for, and sends the client its SETTINGS
// and a GOAWAY that says no request was processed.
func TestSniffStopped(t *testing.T) {
	tests := []struct {
		name   string
		sent   []byte
		before bool // the context is done before Sniff starts
	}{
		{name: "no request", sent: newFrames().preface().settings().bytes()},
		{name: "no preface"},
		{name: "stopped before", sent: newFrames().preface().settings().bytes(), before: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			client, server := net.Pipe()
			defer client.Close()
			defer server.Close()
			go func() { _, _ = client.Write(tc.sent) }()
			received := receive(client)
			ctx, stop := context.WithCancel(context.Background())
			if tc.before {
				stop()
			} else {
				time.AfterFunc(200*time.Millisecond, stop)
			}
			start := time.Now()
			_, err := h2sniff.Sniff(ctx, pipeConn{server}, h2sniff.Options{PrefaceDeadline: start.Add(time.Minute), RequestDeadline: start.Add(time.Minute)})
			if !errors.Is(err, h2sniff.ErrStopped) || !errors.Is(err, context.Canceled) {
				t.Fatalf("Sniff: %v, want ErrStopped", err)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Fatalf("Sniff returned after %v", d)
			}
			server.Close()
			if got, want := <-received, "SETTINGS GOAWAY"; got != want {
				t.Errorf("the client received %q, want %q", got, want)
			}
		})
	}
}

// receive reads the frames conn receives and sends their types, space
// separated, when the connection ends; it closes conn after a GOAWAY
// (last stream 0, NO_ERROR), as a client without streams does.
func receive(conn net.Conn) <-chan string {
	done := make(chan string, 1)
	go func() {
		fr := http2.NewFramer(nil, conn)
		var got []string
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				done <- strings.Join(got, " ")
				return
			}
			name := f.Header().Type.String()
			if f.Header().Flags.Has(http2.FlagPingAck) && f.Header().Type == http2.FramePing {
				name += "+ACK"
			}
			if ga, ok := f.(*http2.GoAwayFrame); ok {
				if ga.LastStreamID != 0 || ga.ErrCode != http2.ErrCodeNo {
					name += "(" + strconv.Itoa(int(ga.LastStreamID)) + ", " + ga.ErrCode.String() + ")"
				}
				_ = conn.Close()
			}
			got = append(got, name)
		}
	}()
	return done
}

type pipeConn struct{ net.Conn }

func (pipeConn) ConnectionState() tls.ConnectionState { return tls.ConnectionState{} }

// TestClients serves the HTTP/2 connections of real clients on one TLS
// listener: a gRPC-Go client's to a grpc.Server (it waits for the
// server's SETTINGS before its first request), net/http's and
// golang.org/x/net/http2's to an http2.Server (which refuses an ACK of
// settings it did not send), several requests each.
func TestClients(t *testing.T) {
	ca := testca.New(t, "example.org")
	svid := ca.SVID(t, "spiffe://example.org/server", time.Hour)
	serverTLS := tlsconfig.TLSServerConfig(svid)
	serverTLS.NextProtos = []string{"h2"}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", serverTLS)
	if err != nil {
		t.Fatal(err)
	}
	grpcConns := &connListener{conns: make(chan net.Conn), closed: make(chan struct{})}
	grpcServer := grpc.NewServer(grpc.Creds(handedOff{}))
	healthpb.RegisterHealthServer(grpcServer, health.NewServer())
	go func() { _ = grpcServer.Serve(grpcConns) }()
	h2 := &http2.Server{}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.Proto+" "+r.Header.Get("Content-Type"))
	})
	var wg sync.WaitGroup
	var accepted atomic.Int32 // connections
	defer func() {
		_ = ln.Close()
		grpcServer.Stop()
		wg.Wait()
	}()
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			wg.Add(1)
			go func() {
				defer wg.Done()
				tc := c.(*tls.Conn)
				if err := tc.Handshake(); err != nil {
					_ = c.Close()
					return
				}
				sniffed, err := h2sniff.Sniff(context.Background(), tc, h2sniff.Options{PrefaceDeadline: time.Now().Add(10 * time.Second)})
				if err != nil {
					t.Errorf("Sniff: %v", err)
					_ = c.Close()
					return
				}
				if strings.HasPrefix(sniffed.ContentType, "application/grpc") {
					select {
					case grpcConns.conns <- sniffed.Replay():
					case <-grpcConns.closed:
						_ = c.Close()
					}
					return
				}
				h2.ServeConn(sniffed.ReplayWithoutAck(), &http2.ServeConnOpts{Handler: handler})
				_ = c.Close()
			}()
		}
	}()

	clientTLS := tlsconfig.TLSClientConfig(ca.Bundle(), tlsconfig.AuthorizeAny())
	addr := ln.Addr().String()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// oneConnection fails t unless the client used one connection: a
	// connection error (GOAWAY) makes net/http retry on another.
	oneConnection := func(t *testing.T) {
		before := accepted.Load()
		t.Cleanup(func() {
			if n := accepted.Load() - before; n != 1 {
				t.Errorf("%d connections, want 1", n)
			}
		})
	}

	t.Run("gRPC-Go", func(t *testing.T) {
		oneConnection(t)
		conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(clientTLS.Clone())))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		for range 3 {
			resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
			if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
				t.Fatalf("Check = %v, %v", resp, err)
			}
		}
	})
	for _, tc := range []struct {
		name      string
		transport http.RoundTripper
	}{
		{"net/http", &http.Transport{TLSClientConfig: clientTLS.Clone(), ForceAttemptHTTP2: true}},
		{"x/net/http2", &http2.Transport{TLSClientConfig: clientTLS.Clone()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			oneConnection(t)
			client := &http.Client{Transport: tc.transport}
			defer client.CloseIdleConnections()
			for range 3 {
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+addr+"/token", strings.NewReader("a=b"))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || string(body) != "HTTP/2.0 application/x-www-form-urlencoded" {
					t.Fatalf("%d %q", resp.StatusCode, body)
				}
			}
			// After a pause the connection is still usable: no GOAWAY
			// for an ACK the server did not expect.
			time.Sleep(50 * time.Millisecond)
			resp, err := client.Get("https://" + addr + "/")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
		})
	}
}

// connListener hands the sniffed gRPC connections to the grpc.Server.
type connListener struct {
	conns  chan net.Conn
	once   sync.Once
	closed chan struct{}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error   { l.once.Do(func() { close(l.closed) }); return nil }
func (l *connListener) Addr() net.Addr { return &net.TCPAddr{} }

// handedOff are credentials for connections whose TLS handshake is done.
type handedOff struct{}

func (handedOff) ServerHandshake(c net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return c, credentials.TLSInfo{State: c.(*h2sniff.Conn).ConnectionState()}, nil
}

func (handedOff) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("server only")
}
func (handedOff) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "tls"}
}
func (h handedOff) Clone() credentials.TransportCredentials { return h }
func (handedOff) OverrideServerName(string) error           { return nil }
