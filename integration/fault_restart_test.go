//go:build integration

package integration

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/spiffe-sts/spiffe-sts/exchange/exchangeclient"
	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
)

// TestFaultSTSRestartUnderLoad restarts spiffe-sts twice while workers
// use the client library: bound tokens kept by Tokens for HTTP
// (RoundTripper) and gRPC (PerRPCCredentials) calls to the example
// resource server, and direct Client.Exchange calls. Tokens live six
// seconds, so refreshes fall inside the restart windows.
//
//  1. Start SPIRE, spiffe-sts with six-second tokens, the resource server.
//  2. Start the workers; each call has a 30 s deadline.
//  3. Restart 1: a token request is in flight (its body half sent) when
//     SIGTERM arrives; it is answered 200 (the server drains), the
//     process exits 0, and a new one starts on the same port and data
//     directory.
//  4. Restart 2, after more than one refresh period.
//  5. Check: no call failed, and the calls span both restarts.
func TestFaultSTSRestartUnderLoad(t *testing.T) {
	t.Parallel()
	const workers = 4
	// 1.
	e := newEnv(t, envOptions{clientSVIDTTL: 10 * time.Minute})
	s := e.startSTS(0, "", shortTTLPolicy)
	rs := e.startResourceServer(s)
	src := e.source()
	ctx := t.Context()
	client := e.client(s, src)
	var refreshFailures atomic.Int64
	tokens, err := client.NewTokens(ctx, exchangeclient.Request{Audience: []string{apiAud}},
		exchangeclient.WithEvents(func(ev exchangeclient.Event) {
			if ev.Kind == exchangeclient.EventFailed {
				refreshFailures.Add(1)
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer tokens.Close()
	rsAuthz := tlsconfig.AuthorizeID(spiffeid.RequireFromString(resourceServerID))
	conn, err := grpc.NewClient(rs.grpcAddr, tokens.GRPCDialOptions(rsAuthz)...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	health := healthpb.NewHealthClient(conn)
	rsHTTP := &http.Client{Transport: tokens.RoundTripper(rsAuthz), Timeout: 30 * time.Second}

	// 2.
	var calls, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	call := func(what string, f func(context.Context) error) {
		callCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		calls.Add(1)
		if err := f(callCtx); err != nil {
			failed.Add(1)
			firstErr.CompareAndSwap(nil, fmt.Sprintf("%s: %v", what, err))
		}
	}
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
				call("HTTP", func(ctx context.Context) error {
					req, _ := http.NewRequestWithContext(ctx, http.MethodGet, rs.httpURL+"/orders", nil)
					resp, err := rsHTTP.Do(req)
					if err != nil {
						return err
					}
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						return fmt.Errorf("%s: %s", resp.Status, resp.Header.Get("WWW-Authenticate"))
					}
					return nil
				})
				call("gRPC", func(ctx context.Context) error {
					_, err := health.Check(ctx, &healthpb.HealthCheckRequest{})
					return err
				})
				call("Exchange", func(ctx context.Context) error {
					_, err := client.Exchange(ctx, exchangeclient.Request{Audience: []string{apiAud}})
					return err
				})
			}
		}()
	}
	wait := func(d time.Duration) {
		select {
		case <-time.After(d):
		case <-ctx.Done():
		}
	}

	// 3.
	wait(3 * time.Second)
	before := calls.Load()
	drained := s.restartDuringRequest(t, src)
	t.Logf("restart 1: the request in flight at SIGTERM was answered: %s", drained)
	// 4.
	wait(7 * time.Second) // more than the 4 s refresh period of 6 s tokens
	between := calls.Load()
	if err := s.Restart(ctx); err != nil {
		t.Fatalf("restart 2: %v", err)
	}
	wait(7 * time.Second)
	close(stop)
	wg.Wait()

	// 5.
	total, bad := calls.Load(), failed.Load()
	fmt.Printf("fault=sts_restart restarts=2 calls=%d failed=%d\n", total, bad)
	t.Logf("calls before restart 1: %d, before restart 2: %d, total %d; background refreshes that failed and were retried: %d",
		before, between, total, refreshFailures.Load())
	if bad != 0 {
		t.Errorf("%d of %d calls failed; first: %v", bad, total, firstErr.Load())
	}
	if before == 0 || between <= before || total <= between {
		t.Errorf("calls did not span the restarts: %d, %d, %d", before, between, total)
	}
}

// restartDuringRequest restarts s with a token request in flight: its
// headers and half its body are on the wire when SIGTERM arrives, and the
// rest is sent once the server logs that it is shutting down. The request
// must be answered with a token (the server drains what it has accepted),
// the process must exit 0, and the new one must become ready. It returns
// the answer's status.
func (s *sts) restartDuringRequest(t *testing.T, src *workloadapi.X509Source) string {
	t.Helper()
	old := s.Process
	body := "grant_type=client_credentials&audience=" + apiAud
	// A raw TLS connection: each write is on the wire at once, unlike
	// net/http's buffered request writer.
	conn, err := tls.Dial("tcp", s.Addr, tlsconfig.MTLSClientConfig(src, src, tlsconfig.AuthorizeID(spiffeid.RequireFromString(stsID))))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	head := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\nConnection: close\r\n\r\n",
		protocol.PathToken, s.Addr, len(body))
	if _, err := io.WriteString(conn, head+body[:len(body)/2]); err != nil {
		t.Fatal(err)
	}
	// Let the server read the request line (it then counts the connection
	// as active, which Shutdown waits for): loopback delivers it in
	// microseconds; this pause only keeps a loaded machine from reordering.
	time.Sleep(300 * time.Millisecond)
	restarted := make(chan error, 1)
	go func() { restarted <- s.Restart(t.Context()) }()
	waitFor(t, 30*time.Second, "spiffe-sts shutdown", old, func() bool {
		return strings.Contains(old.Output(), "shutting down")
	})
	if _, err := io.WriteString(conn, body[len(body)/2:]); err != nil {
		t.Fatalf("finishing the request body after SIGTERM: %v", err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("the request in flight at SIGTERM got no answer: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var tok protocol.Response
	if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &tok) != nil || tok.AccessToken == "" {
		t.Fatalf("the request in flight at SIGTERM: %s %s, want a token", resp.Status, b)
	}
	if err := <-restarted; err != nil {
		t.Fatalf("restart: %v", err)
	}
	return resp.Status
}
