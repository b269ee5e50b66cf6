package exchangeclient_test

import (
	"bytes"
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/spiffe-sts/spiffe-sts/accesstoken/httpauth"
	"github.com/spiffe-sts/spiffe-sts/exchange/exchangeclient"
	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
	"github.com/spiffe-sts/spiffe-sts/internal/ststest"
)

// fakeSidecar is an egress sidecar: it takes plain HTTP/1.1 and h2c
// (gRPC) on loopback (or a Unix socket) and forwards each request to
// https://<Host> over mTLS with its current X509-SVID, which the test
// rotates, or with the SVID pinned for that host.
type fakeSidecar struct {
	addr string // for WithSidecar
	s    *ststest.STS

	transport atomic.Pointer[http.Transport]
	mu        sync.Mutex
	hits      map[string]int             // by path
	pinned    map[string]*http.Transport // by host
	held      *heldRequests              // token requests held; nil: none
}

// heldRequests are the token requests a sidecar holds (holdTokens).
type heldRequests struct {
	arrived chan struct{}
	release chan struct{}
}

func startSidecar(t *testing.T, s *ststest.STS, svid *x509svid.SVID, unixSocket bool) *fakeSidecar {
	t.Helper()
	sc := &fakeSidecar{s: s, hits: map[string]int{}, pinned: map[string]*http.Transport{}}
	sc.rotate(svid)
	var ln net.Listener
	var err error
	if unixSocket {
		dir, derr := os.MkdirTemp("", "sc")
		if derr != nil {
			t.Fatal(derr)
		}
		t.Cleanup(func() { _ = os.RemoveAll(dir) })
		path := filepath.Join(dir, "sidecar.sock")
		ln, err = net.Listen("unix", path)
		sc.addr = "unix://" + path
	} else {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		if err == nil {
			sc.addr = "http://" + ln.Addr().String()
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(&url.URL{Scheme: "https", Host: pr.In.Host})
		},
		Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) { return sc.transportFor(r.URL.Host).RoundTrip(r) }),
		ErrorLog:  log.New(io.Discard, "", 0),
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			sc.mu.Lock()
			sc.hits[r.URL.Path]++
			held := sc.held
			sc.mu.Unlock()
			if held != nil && r.URL.Path == protocol.PathToken {
				held.arrived <- struct{}{}
				<-held.release
			}
			proxy.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: 10 * time.Second,
		Protocols:         new(http.Protocols),
	}
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return sc
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// rotate makes new upstream connections present svid, as a sidecar does
// when its X509-SVID rotates.
func (sc *fakeSidecar) rotate(svid *x509svid.SVID) {
	if old := sc.transport.Swap(sc.upstream(svid)); old != nil {
		old.CloseIdleConnections()
	}
}

// pin makes the sidecar present svid to host whatever it presents
// elsewhere, as a sidecar that kept an old upstream connection would.
func (sc *fakeSidecar) pin(host string, svid *x509svid.SVID) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	sc.pinned[host] = sc.upstream(svid)
}

// upstream is a transport presenting svid, over HTTP/2 when the server
// offers it (gRPC needs it).
func (sc *fakeSidecar) upstream(svid *x509svid.SVID) *http.Transport {
	return &http.Transport{
		TLSClientConfig:   tlsconfig.MTLSClientConfig(svid, sc.s.CA.Bundle(), tlsconfig.AuthorizeMemberOf(sc.s.CA.TrustDomain)),
		ForceAttemptHTTP2: true,
	}
}

func (sc *fakeSidecar) transportFor(host string) *http.Transport {
	sc.mu.Lock()
	tr := sc.pinned[host]
	sc.mu.Unlock()
	if tr != nil {
		return tr
	}
	return sc.transport.Load()
}

// holdTokens makes the token requests through the sidecar wait until
// release is called; arrived receives once for each when it arrives.
func (sc *fakeSidecar) holdTokens(t *testing.T) (arrived <-chan struct{}, release func()) {
	t.Helper()
	h := &heldRequests{arrived: make(chan struct{}, 16), release: make(chan struct{})}
	sc.mu.Lock()
	sc.held = h
	sc.mu.Unlock()
	var once sync.Once
	release = func() {
		once.Do(func() {
			sc.mu.Lock()
			sc.held = nil
			sc.mu.Unlock()
			close(h.release)
		})
	}
	t.Cleanup(release)
	return h.arrived, release
}

func (sc *fakeSidecar) hitsOf(path string) int {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return sc.hits[path]
}

// ordersServer is a resource server behind httpauth: /orders for
// ststest.APIAudience echoes the request body, /elsewhere accepts only
// tokens for another audience.
type ordersServer struct {
	host string
	hits atomic.Int32
}

func startOrders(t *testing.T, s *ststest.STS) *ordersServer {
	t.Helper()
	o := &ordersServer{}
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.Copy(w, r.Body) })
	mux := http.NewServeMux()
	mux.Handle("/orders", httpauth.Middleware(s.Verifier(ststest.APIAudience))(echo))
	mux.Handle("/elsewhere", httpauth.Middleware(s.Verifier("spiffe://example.org/elsewhere"))(echo))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o.host = ln.Addr().String()
	srvSVID := s.WorkloadSVID(t, "spiffe://example.org/ns/prod/sa/orders")
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			o.hits.Add(1)
			mux.ServeHTTP(w, r)
		}),
		TLSConfig:         tlsconfig.MTLSServerConfig(srvSVID, s.CA.Bundle(), tlsconfig.AuthorizeMemberOf(s.CA.TrustDomain)),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })
	return o
}

// sidecarSetup is a workload in the sidecar mode: its Tokens, an HTTP
// client on their RoundTripper, the sidecar and the resource server.
type sidecarSetup struct {
	s       *ststest.STS
	sidecar *fakeSidecar
	orders  *ordersServer
	tokens  *exchangeclient.Tokens
	http    *http.Client
	events  *recorder
	reg     *prometheus.Registry
}

func newSidecarSetup(t *testing.T, unixSocket bool) *sidecarSetup {
	t.Helper()
	s := ststest.Start(t, nil)
	st := &sidecarSetup{s: s, events: &recorder{}, reg: prometheus.NewRegistry()}
	st.sidecar = startSidecar(t, s, s.CA.SVID(t, ststest.WorkloadID, time.Hour), unixSocket)
	st.orders = startOrders(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client, err := exchangeclient.New(ctx, exchangeclient.WithIssuerURL(s.URL),
		exchangeclient.WithSidecar(st.sidecar.addr), exchangeclient.WithMetrics(st.reg))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Close() })
	st.tokens, err = client.NewTokens(ctx, exchangeclient.Request{Audience: []string{ststest.APIAudience}},
		exchangeclient.WithEvents(st.events.record))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.tokens.Close() })
	st.http = &http.Client{Transport: st.tokens.RoundTripper(nil), Timeout: 30 * time.Second}
	return st
}

// call sends req and returns the status, the body and the challenge.
func (st *sidecarSetup) call(t *testing.T, req *http.Request) (int, string, string) {
	t.Helper()
	resp, err := st.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body), resp.Header.Get("WWW-Authenticate")
}

func (st *sidecarSetup) request(t *testing.T, method, path string, body io.Reader) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, "https://"+st.orders.host+path, body)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

const mismatchChallenge = `Bearer error="invalid_token", error_description="the token is not bound to the client certificate", refusal="binding_mismatch"`

// TestSidecarRebindsOnMismatch: the sidecar's SVID rotates, the resource
// server refuses the held token as bound to the old certificate, and the
// RoundTripper re-binds once and retries the request, body included, once.
func TestSidecarRebindsOnMismatch(t *testing.T) {
	for _, unixSocket := range []bool{false, true} {
		name := "loopback"
		if unixSocket {
			name = "unix socket"
		}
		t.Run(name, func(t *testing.T) {
			st := newSidecarSetup(t, unixSocket)
			if code, _, _ := st.call(t, st.request(t, http.MethodGet, "/orders", nil)); code != http.StatusOK {
				t.Fatalf("before rotation: %d", code)
			}
			tokenRequests := st.sidecar.hitsOf(protocol.PathToken)
			if tokenRequests != 1 {
				t.Fatalf("token requests through the sidecar = %d, want 1", tokenRequests)
			}

			st.sidecar.rotate(st.s.CA.SVID(t, ststest.WorkloadID, time.Hour))
			before := st.orders.hits.Load()
			code, body, _ := st.call(t, st.request(t, http.MethodPost, "/orders", bytes.NewReader([]byte("two pizzas"))))
			if code != http.StatusOK || body != "two pizzas" {
				t.Fatalf("after rotation: %d %q, want 200 with the body echoed", code, body)
			}
			if n := st.orders.hits.Load() - before; n != 2 {
				t.Fatalf("the resource server saw %d requests, want the refused one and one retry", n)
			}
			if n := st.sidecar.hitsOf(protocol.PathToken) - tokenRequests; n != 1 {
				t.Fatalf("token requests for the re-binding = %d, want 1", n)
			}
			ev := st.events.wait(t, 30*time.Second, "rebound", func(ev exchangeclient.Event) bool { return ev.Kind == exchangeclient.EventRebound })
			if ev.Err != nil || ev.Expiry.IsZero() {
				t.Fatalf("rebound event %+v", ev)
			}
			if got := counter(t, st.reg, "spiffe_sts_client_rebinds_total", "outcome", "ok"); got != 1 {
				t.Fatalf(`rebinds_total{outcome="ok"} = %v, want 1`, got)
			}
			// The re-bound token is kept: the next call goes through at once.
			before = st.orders.hits.Load()
			if code, _, _ := st.call(t, st.request(t, http.MethodGet, "/orders", nil)); code != http.StatusOK || st.orders.hits.Load()-before != 1 {
				t.Fatalf("after the re-binding: %d, %d requests", code, st.orders.hits.Load()-before)
			}
			tok, err := st.tokens.Token(context.Background(), nil)
			if err != nil || tok == "" {
				t.Fatalf("Token(nil) = %q, %v", tok, err)
			}
		})
	}
}

// TestSidecarConcurrentMismatches: callers refused at once share one
// re-binding.
func TestSidecarConcurrentMismatches(t *testing.T) {
	st := newSidecarSetup(t, false)
	st.sidecar.rotate(st.s.CA.SVID(t, ststest.WorkloadID, time.Hour))
	tokenRequests := st.sidecar.hitsOf(protocol.PathToken)
	const callers = 8
	var wg sync.WaitGroup
	codes := make([]int, callers)
	for i := range callers {
		wg.Go(func() { codes[i], _, _ = st.call(t, st.request(t, http.MethodGet, "/orders", nil)) })
	}
	wg.Wait()
	for i, code := range codes {
		if code != http.StatusOK {
			t.Fatalf("caller %d: %d", i, code)
		}
	}
	if n := st.sidecar.hitsOf(protocol.PathToken) - tokenRequests; n != 1 {
		t.Fatalf("token requests = %d, want one re-binding shared by %d callers", n, callers)
	}
	if n := countKind(st.events.all(), exchangeclient.EventRebound); n != 1 {
		t.Fatalf("%d rebound events, want 1", n)
	}
}

// TestSidecarNoRetry: the refusals that must come back as they are, with
// the resource server called once and no token requested.
func TestSidecarNoRetry(t *testing.T) {
	tests := []struct {
		name            string
		rotate          bool
		path            string
		expectChallenge string
	}{
		{name: "bad token", path: "/elsewhere",
			expectChallenge: `Bearer error="invalid_token", error_description="the token is not for this resource server", refusal="bad_token"`},
		{name: "bad token after a rotation", rotate: true, path: "/elsewhere",
			expectChallenge: `Bearer error="invalid_token", error_description="the token is not for this resource server", refusal="bad_token"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := newSidecarSetup(t, false)
			if tt.rotate {
				st.sidecar.rotate(st.s.CA.SVID(t, ststest.WorkloadID, time.Hour))
			}
			req := st.request(t, http.MethodPost, tt.path, nil)
			tokenRequests := st.sidecar.hitsOf(protocol.PathToken)
			code, _, challenge := st.call(t, req)
			if code != http.StatusUnauthorized || challenge != tt.expectChallenge {
				t.Fatalf("got %d %s, want 401 %s", code, challenge, tt.expectChallenge)
			}
			if n := st.orders.hits.Load(); n != 1 {
				t.Fatalf("the resource server saw %d requests, want 1", n)
			}
			if n := st.sidecar.hitsOf(protocol.PathToken) - tokenRequests; n != 0 {
				t.Fatalf("%d token requests, want none", n)
			}
		})
	}
}

// TestSidecarMismatchBodyNotReplayable: a request refused for a binding
// mismatch whose body cannot be sent again (no GetBody) gets the refusal
// after one attempt, but the token is re-bound, so the next request goes
// through at once.
func TestSidecarMismatchBodyNotReplayable(t *testing.T) {
	st := newSidecarSetup(t, false)
	st.sidecar.rotate(st.s.CA.SVID(t, ststest.WorkloadID, time.Hour))
	tokenRequests := st.sidecar.hitsOf(protocol.PathToken)
	req := st.request(t, http.MethodPost, "/orders", nil)
	req.Body, req.GetBody, req.ContentLength = io.NopCloser(strings.NewReader("once only")), nil, -1
	code, _, challenge := st.call(t, req)
	if code != http.StatusUnauthorized || challenge != mismatchChallenge {
		t.Fatalf("got %d %s, want 401 %s", code, challenge, mismatchChallenge)
	}
	if n, m := st.orders.hits.Load(), st.sidecar.hitsOf(protocol.PathToken)-tokenRequests; n != 1 || m != 1 {
		t.Fatalf("the resource server saw %d requests, %d token requests; want 1 and one re-binding", n, m)
	}
	code, body, _ := st.call(t, st.request(t, http.MethodPost, "/orders", strings.NewReader("again")))
	if code != http.StatusOK || body != "again" {
		t.Fatalf("the next request: %d %q, want 200 with the body echoed", code, body)
	}
	if n, m := st.orders.hits.Load(), st.sidecar.hitsOf(protocol.PathToken)-tokenRequests; n != 2 || m != 1 {
		t.Fatalf("after the next request: %d requests, %d token requests; want 2 and 1", n, m)
	}
}

// TestSidecarRebindFails: the sidecar now presents an SVID the STS will
// not re-bind to (another, unauthorized workload); the resource server's
// refusal comes back, after one re-binding attempt and no second call.
func TestSidecarRebindFails(t *testing.T) {
	st := newSidecarSetup(t, false)
	st.sidecar.rotate(st.s.CA.SVID(t, ststest.DeniedID, time.Hour))
	code, _, challenge := st.call(t, st.request(t, http.MethodGet, "/orders", nil))
	if code != http.StatusUnauthorized || challenge != mismatchChallenge {
		t.Fatalf("got %d %s, want 401 %s", code, challenge, mismatchChallenge)
	}
	if n := st.orders.hits.Load(); n != 1 {
		t.Fatalf("the resource server saw %d requests, want 1", n)
	}
	ev := st.events.wait(t, 30*time.Second, "failed", func(ev exchangeclient.Event) bool { return ev.Kind == exchangeclient.EventFailed })
	if ev.Err == nil {
		t.Fatalf("failed event without an error: %+v", ev)
	}
	if got := counter(t, st.reg, "spiffe_sts_client_rebinds_total", "outcome", "unauthorized_client"); got != 1 {
		t.Fatalf(`rebinds_total{outcome="unauthorized_client"} = %v, want 1`, got)
	}
	if n := countKind(st.events.all(), exchangeclient.EventRebound); n != 0 {
		t.Fatalf("%d rebound events, want none", n)
	}
}

// TestWithSidecarAddress: only plain HTTP to a loopback IP, or a Unix
// socket, and none of the options that need the workload's own SVID.
func TestWithSidecarAddress(t *testing.T) {
	const issuer = "https://sts.example.org:8443"
	tests := []struct {
		name      string
		addr      string
		extra     []exchangeclient.Option
		expectErr string
	}{
		{name: "IPv4 loopback", addr: "http://127.0.0.1:15001"},
		{name: "IPv4 loopback, trailing slash", addr: "http://127.0.0.2:15001/"},
		{name: "IPv6 loopback", addr: "http://[::1]:15001"},
		{name: "unix socket", addr: "unix:///run/sidecar/egress.sock"},
		{name: "not loopback", addr: "http://10.0.0.1:15001",
			expectErr: `exchangeclient: sidecar address "http://10.0.0.1:15001": the host must be a loopback IP address (127.0.0.1, [::1]): tokens travel in plain HTTP`},
		{name: "a name", addr: "http://localhost:15001",
			expectErr: `exchangeclient: sidecar address "http://localhost:15001": the host must be a loopback IP address (127.0.0.1, [::1]): tokens travel in plain HTTP`},
		{name: "https", addr: "https://127.0.0.1:15001",
			expectErr: `exchangeclient: sidecar address "https://127.0.0.1:15001": the scheme must be http or unix; the sidecar originates TLS`},
		{name: "no port", addr: "http://127.0.0.1",
			expectErr: `exchangeclient: sidecar address "http://127.0.0.1": a port is required`},
		{name: "a path", addr: "http://127.0.0.1:15001/sts",
			expectErr: `exchangeclient: sidecar address "http://127.0.0.1:15001/sts": a path is not allowed`},
		{name: "user information", addr: "http://u:p@127.0.0.1:15001",
			expectErr: `exchangeclient: sidecar address "http://u:p@127.0.0.1:15001": want http://loopback-ip:port or unix:///path, without user, query or fragment`},
		{name: "unix socket with a host", addr: "unix://host/run/x.sock",
			expectErr: `exchangeclient: sidecar address "unix://host/run/x.sock": want unix:///absolute/path`},
		{name: "relative unix socket", addr: "unix:x.sock",
			expectErr: `exchangeclient: sidecar address "unix:x.sock": want http://loopback-ip:port or unix:///path, without user, query or fragment`},
		{name: "with an X509 source", addr: "http://127.0.0.1:15001", extra: []exchangeclient.Option{exchangeclient.WithX509Source(&rotatingSource{})},
			expectErr: "exchangeclient: WithSidecar takes no X509 source: the sidecar holds the X509-SVID"},
		{name: "with gRPC", addr: "http://127.0.0.1:15001", extra: []exchangeclient.Option{exchangeclient.WithGRPC()},
			expectErr: "exchangeclient: WithSidecar and WithGRPC: token requests go to the sidecar over HTTP/1.1 (gRPC calls to resource servers: Tokens.GRPCDialOptions)"},
		{name: "with a server ID", addr: "http://127.0.0.1:15001", extra: []exchangeclient.Option{exchangeclient.WithServerID(spiffeid.RequireFromString(ststest.ServerID))},
			expectErr: "exchangeclient: WithSidecar and WithServerID: the sidecar authenticates the server"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := append([]exchangeclient.Option{exchangeclient.WithIssuerURL(issuer), exchangeclient.WithSidecar(tt.addr)}, tt.extra...)
			c, err := exchangeclient.New(context.Background(), opts...)
			if tt.expectErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				_ = c.Close()
				return
			}
			if err == nil || err.Error() != tt.expectErr {
				_ = c.Close()
				t.Fatalf("New error = %v, want %s", err, tt.expectErr)
			}
		})
	}
}
