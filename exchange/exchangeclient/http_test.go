package exchangeclient_test

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/spiffe-sts/spiffe-sts/exchange/exchangeclient"
	"github.com/spiffe-sts/spiffe-sts/internal/fakeclock"
	"github.com/spiffe-sts/spiffe-sts/internal/ststest"
)

// startHTTP runs an HTTPS resource server behind rs and returns its URL.
// It counts the requests that did not come over HTTP/2 in http1.
func startHTTP(t testing.TB, s *ststest.STS, rs *resourceServer, http1 *atomic.Int64) string {
	t.Helper()
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 2 {
			http1.Add(1)
		}
		if err := rs.check(r.Context(), r.Header.Values("Authorization"), r.TLS.PeerCertificates); err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		_, _ = io.WriteString(w, "ok")
	})
	return serveHTTPS(t, s, handler, nil)
}

// serveHTTPS serves handler over mTLS as APIAudience, with connState
// (when not nil) as the server's ConnState hook, and returns its URL.
func serveHTTPS(t testing.TB, s *ststest.STS, handler http.Handler, connState func(net.Conn, http.ConnState)) string {
	t.Helper()
	svid := s.CA.SVID(t, ststest.APIAudience, time.Hour)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler:           handler,
		TLSConfig:         tlsconfig.MTLSServerConfig(svid, s.CA.Bundle(), tlsconfig.AuthorizeAny()),
		ReadHeaderTimeout: 5 * time.Second,
		ConnState:         connState,
		// Refused handshakes are expected.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })
	return "https://" + ln.Addr().String()
}

// TestHTTPRotation sends requests continuously while the client's SVID
// rotates: each carries the token bound to its connection's certificate,
// and none fails.
func TestHTTPRotation(t *testing.T) {
	t.Parallel()
	s := ststest.Start(t, nil)
	rs := newResourceServer(s)
	var http1 atomic.Int64
	url := startHTTP(t, s, rs, &http1)
	src := newRotatingSource(s.CA.Bundle(), s.WorkloadSVID(t, ststest.WorkloadID))
	var rec recorder
	tokens := newTokens(t, newClient(t, s, src), exchangeclient.Request{Audience: []string{ststest.APIAudience}}, exchangeclient.WithEvents(rec.record))
	hc := &http.Client{Transport: tokens.RoundTripper(tlsconfig.AuthorizeID(apiID))}

	const rotations = 5
	calls, errs := callWhileRotating(t, s, src, rs, rotations, 10*time.Second, func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/orders", nil)
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", resp.Status, body)
		}
		return nil
	})
	accepted, certs, refused := rs.stats()
	t.Logf("%d requests, %d accepted, %d client certificates", calls, accepted, certs)
	if len(errs) > 0 {
		t.Errorf("%d requests failed, the first: %v", len(errs), errs[0])
	}
	if len(refused) > 0 {
		t.Errorf("the server refused %d tokens, the first: %s", len(refused), refused[0])
	}
	// New requests move to the new certificate at once.
	if certs != rotations+1 {
		t.Errorf("requests came with %d client certificates, want %d", certs, rotations+1)
	}
	if n := http1.Load(); n != 0 {
		t.Errorf("%d requests over HTTP/1", n)
	}
	for _, ev := range rec.all() {
		if ev.Blocking || ev.Kind == exchangeclient.EventFailed {
			t.Errorf("event %+v: no request should fail or be waited for", ev)
		}
	}
}

func TestRoundTripper(t *testing.T) {
	s := ststest.Start(t, nil)
	rs := newResourceServer(s)
	var http1 atomic.Int64
	url := startHTTP(t, s, rs, &http1)
	src := newRotatingSource(s.CA.Bundle(), s.WorkloadSVID(t, ststest.WorkloadID))
	tokens := newTokens(t, newClient(t, s, src), exchangeclient.Request{Audience: []string{ststest.APIAudience}})

	tests := []struct {
		name           string
		overrideParams func(req *http.Request, opts *[]exchangeclient.RoundTripperOption)
		expectStatus   int
		expectErr      string
	}{
		{
			name:         "ok",
			expectStatus: http.StatusOK,
		},
		{
			name: "Authorization of the request replaced",
			overrideParams: func(req *http.Request, _ *[]exchangeclient.RoundTripperOption) {
				req.Header.Set("Authorization", "Bearer other")
			},
			expectStatus: http.StatusOK,
		},
		{
			name: "base transport",
			overrideParams: func(_ *http.Request, opts *[]exchangeclient.RoundTripperOption) {
				base := &http.Transport{ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 1}
				*opts = append(*opts, exchangeclient.WithBaseTransport(base))
			},
			expectStatus: http.StatusOK,
		},
		{
			name: "plain http refused",
			overrideParams: func(req *http.Request, _ *[]exchangeclient.RoundTripperOption) {
				req.URL.Scheme = "http"
			},
			expectErr: "exchangeclient: the RoundTripper sends tokens over https only",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodGet, url, nil)
			if err != nil {
				t.Fatal(err)
			}
			var opts []exchangeclient.RoundTripperOption
			if tt.overrideParams != nil {
				tt.overrideParams(req, &opts)
			}
			before := req.Header.Clone()
			resp, err := tokens.RoundTripper(tlsconfig.AuthorizeID(apiID), opts...).RoundTrip(req)
			if tt.expectErr != "" {
				if err == nil || err.Error() != tt.expectErr {
					t.Fatalf("RoundTrip error = %v, want %q", err, tt.expectErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tt.expectStatus {
				t.Errorf("status %d, want %d", resp.StatusCode, tt.expectStatus)
			}
			if got := req.Header.Get("Authorization"); got != before.Get("Authorization") {
				t.Errorf("the caller's request was modified")
			}
		})
	}

	// A server that is not the authorized one gets no token: the
	// handshake fails first.
	_, before, _ := rs.stats()
	other := spiffeid.RequireFromString("spiffe://example.org/other")
	_, err := (&http.Client{Transport: tokens.RoundTripper(tlsconfig.AuthorizeID(other))}).Get(url)
	if err == nil || !strings.Contains(err.Error(), `unexpected ID "`+ststest.APIAudience+`"`) {
		t.Errorf("Get from an unauthorized server: %v", err)
	}
	if _, after, _ := rs.stats(); after != before {
		t.Errorf("the unauthorized server received a request")
	}
}

// TestRoundTripperAfterClose checks that a RoundTripper stops with its
// Tokens.
func TestRoundTripperAfterClose(t *testing.T) {
	s := ststest.Start(t, nil)
	rs := newResourceServer(s)
	var http1 atomic.Int64
	url := startHTTP(t, s, rs, &http1)
	src := newRotatingSource(s.CA.Bundle(), s.WorkloadSVID(t, ststest.WorkloadID))
	tokens := newTokens(t, newClient(t, s, src), exchangeclient.Request{Audience: []string{ststest.APIAudience}})
	hc := &http.Client{Transport: tokens.RoundTripper(tlsconfig.AuthorizeID(apiID))}
	if err := tokens.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := hc.Get(url)
	if !errors.Is(err, exchangeclient.ErrTokensClosed) {
		t.Fatalf("Get after Close: %v, want %v", err, exchangeclient.ErrTokensClosed)
	}
	if !strings.Contains(err.Error(), "tokens are closed") {
		t.Fatalf("Get after Close: %v", err)
	}
}

// TestRoundTripperRetiresOldTransport checks, on a fake clock, that after
// a rotation the old certificate's transport keeps its connection busy
// with a request in flight, and closes it when the clock reaches the old
// certificate's NotAfter.
func TestRoundTripperRetiresOldTransport(t *testing.T) {
	t.Parallel()
	clk := fakeclock.New(time.Now())
	s, _ := startFakeTime(t, clk, nil)

	// The server holds /slow until release is closed, and reports each
	// connection's client certificate and its close.
	entered, release := make(chan struct{}), make(chan struct{})
	var mu sync.Mutex
	certOf := map[string]*x509.Certificate{} // by remote address
	closed := make(chan string, 16)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		certOf[r.RemoteAddr] = r.TLS.PeerCertificates[0]
		mu.Unlock()
		if r.URL.Path == "/slow" {
			close(entered)
			<-release
		}
		_, _ = io.WriteString(w, "ok")
	})
	url := serveHTTPS(t, s, handler, func(c net.Conn, state http.ConnState) {
		if state == http.StateClosed {
			closed <- c.RemoteAddr().String()
		}
	})

	oldSVID := s.CA.SVIDValid(t, ststest.WorkloadID, clk.Now().Add(-time.Minute), clk.Now().Add(10*time.Minute))
	oldLeaf := oldSVID.Certificates[0]
	src := newRotatingSource(s.CA.Bundle(), oldSVID)
	var rec recorder
	tokens := newTokens(t, newClient(t, s, src, exchangeclient.WithClock(clk)), exchangeclient.Request{Audience: []string{ststest.APIAudience}},
		exchangeclient.WithEvents(rec.record))
	hc := &http.Client{Transport: tokens.RoundTripper(tlsconfig.AuthorizeID(apiID))}
	get := func(path string) error {
		resp, err := hc.Get(url + path)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if _, err := io.ReadAll(resp.Body); err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s", path, resp.Status)
		}
		return nil
	}

	// A request in flight on the old certificate's connection.
	slowDone := make(chan error, 1)
	go func() { slowDone <- get("/slow") }()
	<-entered

	newSVID := s.CA.SVID(t, ststest.WorkloadID, time.Hour)
	newLeaf := newSVID.Certificates[0]
	src.rotate(newSVID)
	rec.wait(t, 10*time.Second, "rebound", kindFor(exchangeclient.EventRebound, newLeaf))
	// The next request moves to the new certificate's transport, which
	// sets the old one's retirement.
	if err := get("/fast"); err != nil {
		t.Fatal(err)
	}
	close(release)
	if err := <-slowDone; err != nil {
		t.Fatalf("the request in flight over the rotation: %v", err)
	}

	mu.Lock()
	var oldAddr string
	for addr, cert := range certOf {
		switch {
		case cert.Equal(oldLeaf):
			oldAddr = addr
		case !cert.Equal(newLeaf):
			t.Errorf("connection %s presented an unknown certificate", addr)
		}
	}
	mu.Unlock()
	if oldAddr == "" || len(certOf) != 2 {
		t.Fatalf("connections %v; want one per certificate", certOf)
	}
	// The old connection, idle now, stays open until the NotAfter.
	select {
	case addr := <-closed:
		t.Fatalf("connection %s closed before the old certificate's NotAfter", addr)
	default:
	}

	clk.Advance(oldLeaf.NotAfter.Sub(clk.Now()) + time.Second)
	guard := time.NewTimer(10 * time.Second) // only against a hung test
	defer guard.Stop()
	for {
		select {
		case addr := <-closed:
			if addr != oldAddr {
				t.Fatalf("connection %s closed at the old certificate's NotAfter; want only the old one, %s", addr, oldAddr)
			}
			return
		case <-guard.C:
			t.Fatal("the old certificate's connection is still open after its NotAfter")
		}
	}
}
