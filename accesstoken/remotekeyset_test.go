package accesstoken_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/internal/ststest"
)

// jwksServer is an issuer's JWKS endpoint whose document, status and pace
// tests control, counting requests.
type jwksServer struct {
	*httptest.Server
	requests atomic.Int64
	body     atomic.Pointer[[]byte]
	status   atomic.Int64
	// gate, when set, holds every request until it is closed.
	gate atomic.Pointer[chan struct{}]

	mu sync.Mutex
	// arrived is closed, and replaced, when a request arrives.
	arrived chan struct{}
}

func newJWKSServer(t *testing.T, keys ...keyPair) *jwksServer {
	t.Helper()
	s := &jwksServer{arrived: make(chan struct{})}
	s.serve(t, keys...)
	s.status.Store(http.StatusOK)
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.requests.Add(1)
		close(s.arrived)
		s.arrived = make(chan struct{})
		s.mu.Unlock()
		if gate := s.gate.Load(); gate != nil {
			<-*gate
		}
		if status := int(s.status.Load()); status != http.StatusOK {
			http.Error(w, "nope", status)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(*s.body.Load())
	}))
	s.Config.ErrorLog = log.New(io.Discard, "", 0) // handshakes the "untrusted server" case fails
	s.StartTLS()
	t.Cleanup(s.Close)
	return s
}

// serve makes the server publish keys from now on.
func (s *jwksServer) serve(t *testing.T, keys ...keyPair) {
	t.Helper()
	var docs []json.RawMessage
	for _, k := range keys {
		set, err := k.publicSet(t, jwa.ES256()).MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		var doc struct{ Keys []json.RawMessage }
		if err := json.Unmarshal(set, &doc); err != nil {
			t.Fatal(err)
		}
		docs = append(docs, doc.Keys...)
	}
	body, err := json.Marshal(map[string]any{"keys": docs})
	if err != nil {
		t.Fatal(err)
	}
	s.body.Store(&body)
}

func (s *jwksServer) serveBody(body string) {
	b := []byte(body)
	s.body.Store(&b)
}

// waitRequests waits until the server has seen n requests, failing the
// test after a generous timeout that only guards against a hung test.
func (s *jwksServer) waitRequests(t *testing.T, n int64) {
	t.Helper()
	guard := time.NewTimer(10 * time.Second)
	defer guard.Stop()
	for {
		s.mu.Lock()
		seen, arrived := s.requests.Load(), s.arrived
		s.mu.Unlock()
		if seen >= n {
			return
		}
		select {
		case <-arrived:
		case <-guard.C:
			t.Fatalf("%d requests, want %d", seen, n)
		}
	}
}

// hold makes requests wait until the returned function is called.
func (s *jwksServer) hold() (release func()) {
	gate := make(chan struct{})
	s.gate.Store(&gate)
	return func() { s.gate.Store(nil); close(gate) }
}

func TestNewRemoteKeySet(t *testing.T) {
	k1 := newKeyPair(t, "k1")
	tests := []struct {
		name           string
		overrideServer func(*jwksServer)
		overrideURL    func(string) string
		overrideConfig func(*accesstoken.RemoteKeySetConfig)
		expectErr      string
		expectPrefix   string // when the rest of the message is not ours
	}{
		{name: "baseline"},
		{name: "http URL", overrideURL: func(u string) string { return strings.Replace(u, "https:", "http:", 1) },
			expectErr: `accesstoken: JWKS URL "http://` + "%HOST%" + `/jwks" is not an https URL`},
		{name: "no HTTP client", overrideConfig: func(c *accesstoken.RemoteKeySetConfig) { c.HTTPClient = nil },
			expectErr: "accesstoken: RemoteKeySetConfig.HTTPClient is nil"},
		{name: "negative interval", overrideConfig: func(c *accesstoken.RemoteKeySetConfig) { c.MinRefreshInterval = -time.Second },
			expectErr: "accesstoken: negative refresh interval"},
		{name: "server error", overrideServer: func(s *jwksServer) { s.status.Store(http.StatusInternalServerError) },
			expectErr: "accesstoken: fetch JWKS: 500 Internal Server Error"},
		{name: "not JSON", overrideServer: func(s *jwksServer) { s.serveBody("<html>") }, expectPrefix: "accesstoken: parse JWKS: "},
		{name: "no keys", overrideServer: func(s *jwksServer) { s.serveBody(`{"keys":[]}`) }, expectErr: "accesstoken: fetched JWKS has no keys"},
		{name: "key without kid", overrideServer: func(s *jwksServer) {
			s.serveBody(strings.Replace(string(*s.body.Load()), `"kid":"k1"`, `"x-other":"y"`, 1))
		}, expectErr: "accesstoken: key 0 has no kid"},
		{name: "too large", overrideServer: func(s *jwksServer) { s.serveBody(strings.Repeat(" ", 1<<20+1)) },
			expectErr: "accesstoken: fetch JWKS: document larger than 1048576 bytes"},
		{name: "untrusted server", overrideConfig: func(c *accesstoken.RemoteKeySetConfig) { c.HTTPClient = &http.Client{} },
			expectPrefix: "accesstoken: fetch JWKS: Get "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newJWKSServer(t, k1)
			if tt.overrideServer != nil {
				tt.overrideServer(srv)
			}
			jwksURL := srv.URL + "/jwks"
			if tt.overrideURL != nil {
				jwksURL = tt.overrideURL(jwksURL)
			}
			cfg := accesstoken.RemoteKeySetConfig{HTTPClient: srv.Client()}
			if tt.overrideConfig != nil {
				tt.overrideConfig(&cfg)
			}
			keys, err := accesstoken.NewRemoteKeySet(context.Background(), jwksURL, cfg)
			expectErr := strings.ReplaceAll(tt.expectErr, "%HOST%", strings.TrimPrefix(srv.URL, "https://"))
			switch {
			case expectErr != "":
				if err == nil || err.Error() != expectErr {
					t.Fatalf("err = %v, want %s", err, expectErr)
				}
				return
			case tt.expectPrefix != "":
				if err == nil || !strings.HasPrefix(err.Error(), tt.expectPrefix) {
					t.Fatalf("err = %v, want %s...", err, tt.expectPrefix)
				}
				return
			case err != nil:
				t.Fatal(err)
			}
			if _, err := keys.LookupKey(context.Background(), "k1"); err != nil {
				t.Fatal(err)
			}
			if n := srv.requests.Load(); n != 1 {
				t.Fatalf("%d requests, want 1", n)
			}
		})
	}
}

func TestNewRemoteKeySetHonorsContext(t *testing.T) {
	srv := newJWKSServer(t, newKeyPair(t, "k1"))
	defer srv.hold()()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		// Cancel once the fetch is under way (and held).
		srv.mu.Lock()
		arrived := srv.arrived
		srv.mu.Unlock()
		<-arrived
		cancel()
	}()
	_, err := accesstoken.NewRemoteKeySet(ctx, srv.URL, accesstoken.RemoteKeySetConfig{HTTPClient: srv.Client()})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want %v", err, context.Canceled)
	}
}

// TestRemoteKeySetRefresh drives a key set through rotations on a fake
// clock. Each case starts from a key set that fetched {k1} at t0.
func TestRemoteKeySetRefresh(t *testing.T) {
	k1, k2, k3 := newKeyPair(t, "k1"), newKeyPair(t, "k2"), newKeyPair(t, "k3")
	type env struct {
		srv  *jwksServer
		clk  *clock
		keys *accesstoken.RemoteKeySet
	}
	tests := []struct {
		name string
		// run acts on the key set and reports the number of requests it
		// expects the server to have seen in all.
		run func(t *testing.T, e env) int64
	}{
		{name: "known kid: no fetch", run: func(t *testing.T, e env) int64 {
			e.clk.Add(4 * time.Minute)
			mustLookup(t, e.keys, "k1")
			return 1
		}},
		{name: "rotation: unknown kid is fetched", run: func(t *testing.T, e env) int64 {
			e.srv.serve(t, k2)
			mustLookup(t, e.keys, "k2")
			// k1 was withdrawn; looking it up again is within the floor.
			expectLookupErr(t, e.keys, "k1", `accesstoken: unknown signing key: "k1" (JWKS fetched less than 10s ago)`)
			return 2
		}},
		{name: "unknown kid still unknown after fetch", run: func(t *testing.T, e env) int64 {
			expectLookupErr(t, e.keys, "k2", `accesstoken: unknown signing key: "k2"`)
			mustLookup(t, e.keys, "k1")
			return 2
		}},
		{name: "floor: second unknown kid within it is not fetched", run: func(t *testing.T, e env) int64 {
			e.srv.serve(t, k1, k2)
			mustLookup(t, e.keys, "k2")
			e.srv.serve(t, k1, k2, k3)
			e.clk.Add(9 * time.Second)
			expectLookupErr(t, e.keys, "k3", `accesstoken: unknown signing key: "k3" (JWKS fetched less than 10s ago)`)
			e.clk.Add(time.Second)
			mustLookup(t, e.keys, "k3")
			return 3
		}},
		{name: "floor applies to failed fetches", run: func(t *testing.T, e env) int64 {
			e.srv.status.Store(http.StatusServiceUnavailable)
			expectLookupErr(t, e.keys, "k2", `accesstoken: unknown signing key: "k2": accesstoken: fetch JWKS: 503 Service Unavailable`)
			expectLookupErr(t, e.keys, "k2", `accesstoken: unknown signing key: "k2" (JWKS fetched less than 10s ago)`)
			mustLookup(t, e.keys, "k1") // the old keys still work
			return 2
		}},
		{name: "fetch error keeps the old keys", run: func(t *testing.T, e env) int64 {
			e.srv.serveBody(`{"keys":[]}`)
			expectLookupErr(t, e.keys, "k2", `accesstoken: unknown signing key: "k2": accesstoken: fetched JWKS has no keys`)
			mustLookup(t, e.keys, "k1")
			return 2
		}},
		{name: "N concurrent unknown-kid lookups share one fetch", run: func(t *testing.T, e env) int64 {
			e.srv.serve(t, k1, k2)
			release := e.srv.hold()
			var wg, started sync.WaitGroup
			started.Add(16)
			for range 16 {
				wg.Go(func() { started.Done(); mustLookup(t, e.keys, "k2") })
			}
			// The fetch is held, so the lookups that start meanwhile
			// queue behind it; any that comes after finds k2.
			e.srv.waitRequests(t, 2)
			started.Wait()
			release()
			wg.Wait()
			return 2
		}},
		{name: "waiting lookup honors its context", run: func(t *testing.T, e env) int64 {
			release := e.srv.hold()
			defer release()
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			if _, err := e.keys.LookupKey(ctx, "k2"); !errors.Is(err, context.Canceled) {
				t.Fatalf("err = %v, want %v", err, context.Canceled)
			}
			e.srv.waitRequests(t, 2)
			return 2
		}},
		{name: "stale keys are refetched in the background", run: func(t *testing.T, e env) int64 {
			e.srv.serve(t, k2)
			e.clk.Add(5 * time.Minute)
			mustLookup(t, e.keys, "k1") // answered from the stale keys
			// The background fetch has started: a lookup of a kid it
			// brings waits for it.
			mustLookup(t, e.keys, "k2")
			if _, err := e.keys.LookupKey(context.Background(), "k1"); !errors.Is(err, accesstoken.ErrUnknownKey) {
				t.Fatalf("withdrawn key: err = %v", err)
			}
			return 2
		}},
		{name: "stale keys: failing refetch is retried at the floor's pace", run: func(t *testing.T, e env) int64 {
			e.srv.status.Store(http.StatusInternalServerError)
			e.clk.Add(5 * time.Minute)
			mustLookup(t, e.keys, "k1")
			// An unknown kid waits for the background fetch under way, or
			// finds it failed within the floor; either way it starts none.
			if _, err := e.keys.LookupKey(context.Background(), "k2"); !errors.Is(err, accesstoken.ErrUnknownKey) {
				t.Fatalf("k2 while the refetch fails: err = %v", err)
			}
			for range 10 {
				mustLookup(t, e.keys, "k1")
			}
			e.clk.Add(10 * time.Second)
			e.srv.status.Store(http.StatusOK)
			e.srv.serve(t, k2)
			mustLookup(t, e.keys, "k1")
			mustLookup(t, e.keys, "k2") // waits for the background fetch
			return 3
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := newJWKSServer(t, k1)
			clk := newClock(now)
			keys, err := accesstoken.NewRemoteKeySet(context.Background(), srv.URL+"/jwks", accesstoken.RemoteKeySetConfig{
				HTTPClient: srv.Client(), Now: clk.Now,
			})
			if err != nil {
				t.Fatal(err)
			}
			want := tt.run(t, env{srv: srv, clk: clk, keys: keys})
			if n := srv.requests.Load(); n != want {
				t.Fatalf("%d requests, want %d", n, want)
			}
		})
	}
}

func mustLookup(t *testing.T, keys accesstoken.KeySet, kid string) {
	t.Helper()
	key, err := keys.LookupKey(context.Background(), kid)
	if err != nil {
		t.Errorf("LookupKey(%q): %v", kid, err)
		return
	}
	if got, _ := key.KeyID(); got != kid {
		t.Errorf("LookupKey(%q) returned key %q", kid, got)
	}
}

func expectLookupErr(t *testing.T, keys accesstoken.KeySet, kid, want string) {
	t.Helper()
	_, err := keys.LookupKey(context.Background(), kid)
	if err == nil || err.Error() != want || !errors.Is(err, accesstoken.ErrUnknownKey) {
		t.Fatalf("LookupKey(%q): err = %v, want %s", kid, err, want)
	}
}

// TestRemoteKeySetWithSTS verifies a token minted by a real in-process
// spiffe-sts against its JWKS endpoint, fetched over mTLS.
func TestRemoteKeySetWithSTS(t *testing.T) {
	ctx := context.Background()
	s := ststest.Start(t, nil)
	rs := s.WorkloadSVID(t, "spiffe://example.org/ns/prod/sa/api")
	keys, err := accesstoken.NewRemoteKeySet(ctx, s.URL+"/jwks", accesstoken.RemoteKeySetConfig{HTTPClient: s.Client(rs)})
	if err != nil {
		t.Fatal(err)
	}
	leaf := s.WorkloadSVID(t, ststest.WorkloadID).Certificates[0]
	claims := accesstoken.Claims{Subject: ststest.WorkloadID, ClientID: ststest.WorkloadID, Audience: accesstoken.Audience{ststest.APIAudience}, Scope: "read"}
	raw, err := s.Issuer.Mint(ctx, &claims, leaf, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	v := accesstoken.NewVerifier(s.URL, keys, &accesstoken.Config{Audiences: []string{ststest.APIAudience}})
	got, err := v.Verify(ctx, raw, leaf)
	if err != nil {
		t.Fatal(err)
	}
	if got.Subject != ststest.WorkloadID || got.JWTID != claims.JWTID {
		t.Fatalf("claims = %+v", got)
	}
}
