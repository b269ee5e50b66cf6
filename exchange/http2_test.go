package exchange_test

//lint:file-ignore SA1019 net/http (Go 1.26) cannot serve HTTP/2 on a net.Conn that is not a *tls.Conn, as the sniffed connection is; x/net's server is the one net/http bundles.

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/spiffe-sts/spiffe-sts/exchange"
	"github.com/spiffe-sts/spiffe-sts/exchange/exchangepb"
	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
)

// TestHTTPServerProtocols checks that the one listener offers h2 and
// http/1.1 by ALPN and serves the token endpoint over HTTP/1.1 and HTTP/2
// and the gRPC API, each client on one connection.
func TestHTTPServerProtocols(t *testing.T) {
	f := newFixture(t, nil)
	svid := f.svid(t, workloadID)
	addr := strings.TrimPrefix(f.issuerURL, "https://")
	for _, protos := range [][]string{{"h2", "http/1.1"}, {"http/1.1"}} {
		cfg := f.TLSConfig(svid)
		cfg.NextProtos = protos
		conn, err := tls.Dial("tcp", addr, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if got := conn.ConnectionState().NegotiatedProtocol; got != protos[0] {
			t.Errorf("ALPN %v: negotiated %q", protos, got)
		}
		_ = conn.Close()
	}

	body := f.exchangeParams(t).Encode()
	for _, tc := range []struct {
		name      string
		transport *http.Transport
		proto     string
	}{
		{"HTTP/1.1", &http.Transport{TLSClientConfig: f.TLSConfig(svid), TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}, "HTTP/1.1"},
		{"HTTP/2", &http.Transport{TLSClientConfig: f.TLSConfig(svid), ForceAttemptHTTP2: true}, "HTTP/2.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := &http.Client{Transport: tc.transport, Timeout: 10 * time.Second}
			defer client.CloseIdleConnections()
			conns := 0
			ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
				GotConn: func(info httptrace.GotConnInfo) {
					if !info.Reused {
						conns++
					}
				},
			})
			for range 3 {
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, f.issuerURL+protocol.PathToken, strings.NewReader(body))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || resp.Proto != tc.proto {
					t.Fatalf("%s %d, want %s 200", resp.Proto, resp.StatusCode, tc.proto)
				}
			}
			if conns != 1 {
				t.Errorf("%d connections, want 1", conns)
			}
		})
	}
	t.Run("gRPC", func(t *testing.T) {
		form, _ := url.ParseQuery(body)
		client := f.GRPCClient(t, svid)
		for range 3 {
			if resp, err := client.Exchange(context.Background(), protoFromForm(form)); err != nil || resp.GetAccessToken() == "" {
				t.Fatalf("Exchange = %v, %v", resp, err)
			}
		}
	})
}

// TestGRPCAfterHTTP2 sends a gRPC call on an HTTP/2 connection that began
// with a plain request, as a proxy that multiplexes both APIs does: it is
// served all the same (through grpc.Server.ServeHTTP).
func TestGRPCAfterHTTP2(t *testing.T) {
	f := newFixture(t, nil)
	client := &http.Client{Transport: &http2.Transport{TLSClientConfig: f.TLSConfig(f.svid(t, workloadID))}, Timeout: 10 * time.Second}
	defer client.CloseIdleConnections()
	reused := false
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) { reused = info.Reused },
	})

	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, f.issuerURL+protocol.PathJWKS, nil)
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	form, _ := url.ParseQuery(f.exchangeParams(t).Encode())
	msg, err := proto.Marshal(protoFromForm(form))
	if err != nil {
		t.Fatal(err)
	}
	frame := binary.BigEndian.AppendUint32([]byte{0}, uint32(len(msg))) // gRPC length-prefixed message
	req, _ = http.NewRequestWithContext(ctx, http.MethodPost, f.issuerURL+exchangepb.TokenExchange_Exchange_FullMethodName, bytes.NewReader(append(frame, msg...)))
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("TE", "trailers")
	resp, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.Trailer.Get("Grpc-Status") != "0" || len(raw) < 5 {
		t.Fatalf("status %d, grpc-status %q (%s), %d bytes, %v", resp.StatusCode, resp.Trailer.Get("Grpc-Status"), resp.Trailer.Get("Grpc-Message"), len(raw), err)
	}
	var out exchangepb.ExchangeResponse
	if err := proto.Unmarshal(raw[5:], &out); err != nil || out.GetAccessToken() == "" {
		t.Fatalf("response %v, %v", &out, err)
	}
	if !reused {
		t.Error("the gRPC call went on a new connection")
	}
}

// TestHTTP2PrefaceRefused checks that an h2 connection that is not
// HTTP/2, sends no preface within ReadHeaderTimeout or no request within
// IdleTimeout, is closed, and that the server goes on serving.
func TestHTTP2PrefaceRefused(t *testing.T) {
	const headerTimeout, idleTimeout = 300 * time.Millisecond, 800 * time.Millisecond
	f := newFixture(t, func(c *exchange.Config) { c.ReadHeaderTimeout, c.IdleTimeout = headerTimeout, idleTimeout })
	addr := strings.TrimPrefix(f.issuerURL, "https://")
	settings := []byte{0, 0, 0, 4, 0, 0, 0, 0, 0}
	for _, tc := range []struct {
		name    string
		sent    []byte
		timeout time.Duration // when the server closes the connection, at the latest
		frames  string        // what the server sends
	}{
		{"garbage", bytes.Repeat([]byte("garbage "), 8), 0, ""},
		{"HTTP/1.1 over h2", []byte("GET / HTTP/1.1\r\nHost: sts\r\n\r\n"), 0, ""},
		{"nothing", nil, headerTimeout, ""},
		{"no request", append([]byte(http2.ClientPreface), settings...), idleTimeout, "SETTINGS GOAWAY"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := f.TLSConfig(f.svid(t, workloadID))
			cfg.NextProtos = []string{"h2"}
			conn, err := tls.Dial("tcp", addr, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := conn.Write(tc.sent); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			_ = conn.SetReadDeadline(start.Add(10 * time.Second))
			frames, err := readFrames(conn)
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("the server kept the connection open: %v", err)
			}
			if d := time.Since(start); d > tc.timeout+2*time.Second {
				t.Errorf("closed after %v, want %v at most", d, tc.timeout)
			}
			if frames != tc.frames {
				t.Errorf("the server sent %q, want %q", frames, tc.frames)
			}
		})
	}
	if resp := f.post(t, f.client(f.svid(t, workloadID)), "application/x-www-form-urlencoded", f.exchangeParams(t).Encode()); resp.status != http.StatusOK {
		t.Fatalf("after the refused connections: %d %v", resp.status, resp.body)
	}
}

// TestShutdownStopsGRPC checks that http.Server.Shutdown stops the gRPC
// API gracefully and leaves no goroutine of the server behind.
func TestShutdownStopsGRPC(t *testing.T) {
	before := runtime.NumGoroutine()
	f := newFixture(t, nil)
	form, _ := url.ParseQuery(f.exchangeParams(t).Encode())
	conn, err := grpc.NewClient("passthrough:///"+strings.TrimPrefix(f.issuerURL, "https://"),
		grpc.WithTransportCredentials(credentials.NewTLS(f.TLSConfig(f.svid(t, workloadID)))))
	if err != nil {
		t.Fatal(err)
	}
	client := exchangepb.NewTokenExchangeClient(conn)
	if _, err := client.Exchange(context.Background(), protoFromForm(form)); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.HTTP.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if _, err := client.Exchange(ctx, protoFromForm(form)); status.Code(err) != codes.Unavailable {
		t.Fatalf("after Shutdown: %v, want Unavailable", err)
	}
	_ = conn.Close()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestGRPCCallDeadline checks that a gRPC call whose message never comes
// ends at WriteTimeout, as an HTTP/2 request does.
func TestGRPCCallDeadline(t *testing.T) {
	const timeout = 300 * time.Millisecond
	f := newFixture(t, func(c *exchange.Config) { c.WriteTimeout = timeout })
	client := &http.Client{Transport: &http2.Transport{TLSClientConfig: f.TLSConfig(f.svid(t, workloadID))}}
	defer client.CloseIdleConnections()
	body, never := io.Pipe()
	defer never.Close()
	req, _ := http.NewRequest(http.MethodPost, f.issuerURL+exchangepb.TokenExchange_Exchange_FullMethodName, body)
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("TE", "trailers")
	start := time.Now()
	done := make(chan string, 1)
	go func() {
		resp, err := client.Do(req)
		if err != nil {
			done <- err.Error()
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		done <- "grpc-status " + resp.Trailer.Get("Grpc-Status") + resp.Header.Get("Grpc-Status")
	}()
	select {
	case got := <-done:
		if got == "grpc-status 0" {
			t.Fatalf("the call succeeded")
		}
		if d := time.Since(start); d < timeout {
			t.Fatalf("the call ended after %v (%s), before WriteTimeout", d, got)
		}
	case <-time.After(timeout + 5*time.Second):
		t.Fatal("the call did not end")
	}
}

// TestHTTP2SniffLimit checks that an h2 connection that sends more than
// the request headers the server accepts, and a little more, without a
// request is closed at once: what it costs the server before it is
// authenticated is bounded by that, not by IdleTimeout.
func TestHTTP2SniffLimit(t *testing.T) {
	f := newFixture(t, nil)
	cfg := f.TLSConfig(f.svid(t, workloadID))
	cfg.NextProtos = []string{"h2"}
	conn, err := tls.Dial("tcp", strings.TrimPrefix(f.issuerURL, "https://"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var sent bytes.Buffer
	sent.WriteString(http2.ClientPreface)
	fr := http2.NewFramer(&sent, nil)
	_ = fr.WriteSettings()
	for sent.Len() < 24<<10 { // 16 KiB + 320 B of headers, 4 KiB of other frames
		_ = fr.WriteWindowUpdate(0, 1)
	}
	go func() { _, _ = conn.Write(sent.Bytes()) }()
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = io.Copy(io.Discard, conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the server kept the connection open: %v", err)
	}
}

// readFrames reads HTTP/2 frames from conn until it fails, and returns
// their types, space separated (a GOAWAY's other than last stream 0,
// NO_ERROR with these), and the error.
func readFrames(conn net.Conn) (string, error) {
	fr := http2.NewFramer(nil, conn)
	var got []string
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return strings.Join(got, " "), err
		}
		name := f.Header().Type.String()
		if ga, ok := f.(*http2.GoAwayFrame); ok && (ga.LastStreamID != 0 || ga.ErrCode != http2.ErrCodeNo) {
			name += fmt.Sprintf("(%d, %v)", ga.LastStreamID, ga.ErrCode)
		}
		got = append(got, name)
	}
}

// TestShutdownWhileSniffing checks that http.Server.Shutdown does not wait
// for an HTTP/2 connection without a request (which needs no client
// certificate): it gets a GOAWAY at once, and a request it sends then is
// not served.
func TestShutdownWhileSniffing(t *testing.T) {
	f := newFixture(t, nil)
	cfg := f.TLSConfig(nil)
	cfg.NextProtos = []string{"h2"}
	conn, err := tls.Dial("tcp", strings.TrimPrefix(f.issuerURL, "https://"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	fr := http2.NewFramer(conn, conn)
	if _, err := io.WriteString(conn, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	if f, err := fr.ReadFrame(); err != nil || f.Header().Type != http2.FrameSettings {
		t.Fatalf("the server's preface: %v, %v", f, err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	start := time.Now()
	shutdown := make(chan error, 1)
	go func() { shutdown <- f.HTTP.Shutdown(ctx) }()
	got, err := fr.ReadFrame()
	if ga, ok := got.(*http2.GoAwayFrame); !ok || ga.LastStreamID != 0 || ga.ErrCode != http2.ErrCodeNo {
		t.Fatalf("after Shutdown: %v, %v; want GOAWAY(0, NO_ERROR)", got, err)
	}
	// A request after the GOAWAY: the connection ends, unanswered.
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, hf := range [][2]string{{":method", "GET"}, {":scheme", "https"}, {":authority", "sts"}, {":path", protocol.PathJWKS}} {
		_ = enc.WriteField(hpack.HeaderField{Name: hf[0], Value: hf[1]})
	}
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block.Bytes(), EndHeaders: true, EndStream: true})
	frames, err := readFrames(conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("the connection stayed open after GOAWAY: %v", err)
	}
	if frames != "" {
		t.Errorf("the request was answered: %s", frames)
	}
	if err := <-shutdown; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Shutdown took %v", d)
	}
}

// TestGRPCKeepalivePolicy checks that the gRPC API answers a client's
// keepalive PINGs as often as keepalive's MinTime, streams or not, and
// still refuses a flood of them.
func TestGRPCKeepalivePolicy(t *testing.T) {
	const minTime = 100 * time.Millisecond
	defer exchange.SetKeepaliveMinTime(minTime)()
	f := newFixture(t, nil)
	cfg := f.TLSConfig(nil)
	cfg.NextProtos = []string{"h2"}
	conn, err := tls.Dial("tcp", strings.TrimPrefix(f.issuerURL, "https://"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	fr := http2.NewFramer(conn, conn)
	_, _ = io.WriteString(conn, http2.ClientPreface)
	_ = fr.WriteSettings()
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, hf := range [][2]string{{":method", "POST"}, {":scheme", "https"}, {":authority", "sts"}, {":path", "/no.Such/Method"}, {"content-type", "application/grpc"}, {"te", "trailers"}} {
		_ = enc.WriteField(hpack.HeaderField{Name: hf[0], Value: hf[1]})
	}
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block.Bytes(), EndHeaders: true, EndStream: true})
	// next reads frames up to one of type want, answering SETTINGS.
	next := func(want http2.FrameType) http2.Frame {
		t.Helper()
		for {
			got, err := fr.ReadFrame()
			if err != nil {
				t.Fatal(err)
			}
			if ga, ok := got.(*http2.GoAwayFrame); ok && want != http2.FrameGoAway {
				t.Fatalf("GOAWAY %v %q", ga.ErrCode, ga.DebugData())
			}
			if s, ok := got.(*http2.SettingsFrame); ok && !s.IsAck() {
				_ = fr.WriteSettingsAck()
			}
			if got.Header().Type == want && (want != http2.FrameHeaders || got.Header().Flags.Has(http2.FlagHeadersEndStream)) {
				return got
			}
		}
	}
	next(http2.FrameHeaders) // the call's trailers: no stream from here
	for i := range 5 {
		time.Sleep(minTime + 50*time.Millisecond)
		_ = fr.WritePing(false, [8]byte{byte(i)})
		next(http2.FramePing)
	}
	for i := range 5 {
		_ = fr.WritePing(false, [8]byte{byte(i)})
	}
	if ga := next(http2.FrameGoAway).(*http2.GoAwayFrame); ga.ErrCode != http2.ErrCodeEnhanceYourCalm {
		t.Fatalf("after a flood of PINGs: GOAWAY %v, want ENHANCE_YOUR_CALM", ga.ErrCode)
	}
}
