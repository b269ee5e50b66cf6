//go:build integration

package integration

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/exchange/exchangeclient"
	"github.com/spiffe-sts/spiffe-sts/integration/harness"
)

const resourceServerID = "spiffe://example.org/ns/prod/sa/orders"

// resourceServer is a running examples/resource-server.
type resourceServer struct {
	proc     *harness.Process
	grpcAddr string
	httpURL  string
}

// startResourceServer registers and starts the example resource server
// for apiAud, trusting the STS s.
func (e *env) startResourceServer(s *sts) *resourceServer {
	e.t.Helper()
	return e.startResourceServerAs(s, "orders-rs", resourceServerID, apiAud)
}

// startResourceServerAs registers a copy of the example resource server
// named name as id, with dnsNames in its X509-SVID, accepting tokens for
// audience.
func (e *env) startResourceServerAs(s *sts, name, id, audience string, dnsNames ...string) *resourceServer {
	e.t.Helper()
	return e.startResourceServerArgs(s, name, id, audience, dnsNames, nil)
}

// startResourceServerArgs is startResourceServerAs with extra command-line
// arguments for the resource server.
func (e *env) startResourceServerArgs(s *sts, name, id, audience string, dnsNames, args []string) *resourceServer {
	e.t.Helper()
	path, err := harness.CopyExecutable(bin.resourceServer, e.spire.Dir(), name)
	if err != nil {
		e.t.Fatal(err)
	}
	e.register(harness.Entry{SPIFFEID: id, Selectors: []string{"unix:path:" + path}, DNSNames: dnsNames})
	grpcPort, err := harness.FreePort()
	if err != nil {
		e.t.Fatal(err)
	}
	httpPort, err := harness.FreePort()
	if err != nil {
		e.t.Fatal(err)
	}
	rs := &resourceServer{grpcAddr: fmt.Sprintf("127.0.0.1:%d", grpcPort), httpURL: fmt.Sprintf("https://127.0.0.1:%d", httpPort)}
	rs.proc, err = harness.StartProcess(path, append([]string{
		"-grpc-addr", rs.grpcAddr, "-http-addr", strings.TrimPrefix(rs.httpURL, "https://"),
		"-sts", s.url, "-sts-id", stsID, "-audience", audience, "-max-connection-age", "2s",
	}, args...), []string{"SPIFFE_ENDPOINT_SOCKET=" + e.spire.WorkloadAPIAddr()}, filepath.Join(e.t.TempDir(), "rs.log"))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		_ = rs.proc.Stop()
		if e.t.Failed() {
			e.t.Logf("resource-server log:\n%s", rs.proc.Output())
		}
	})
	waitFor(e.t, 45*time.Second, "resource-server", rs.proc, func() bool {
		return strings.Contains(rs.proc.Output(), "resource-server: gRPC on")
	})
	return rs
}

// stats reads the resource server's counters.
func (rs *resourceServer) stats(t *testing.T, src *workloadapi.X509Source) (accepted, mismatches int64) {
	t.Helper()
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsconfig.MTLSClientConfig(src, src, tlsconfig.AuthorizeID(spiffeid.RequireFromString(resourceServerID)))}}
	resp, err := c.Get(rs.httpURL + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Accepted   int64 `json:"accepted"`
		Mismatches int64 `json:"binding_mismatches"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out.Accepted, out.Mismatches
}

// TestRotationZeroFailedCalls calls a gRPC resource server continuously
// (and an HTTP one alongside) while this workload's X509-SVID rotates
// every few seconds: no call fails, and the resource server checks on
// every accepted call that the token is bound to that connection's
// certificate.
func TestRotationZeroFailedCalls(t *testing.T) {
	t.Parallel()
	const wantRotations = 5
	e := newEnv(t, envOptions{clientSVIDTTL: 20 * time.Second})
	s := e.startSTS(0, "", policyRule)
	rs := e.startResourceServer(s)
	src := e.source()
	ctx := t.Context()

	var mu sync.Mutex
	var rebinds []time.Duration
	tokens, err := e.client(s, src).NewTokens(ctx, exchangeclient.Request{Audience: []string{apiAud}},
		exchangeclient.WithEvents(func(ev exchangeclient.Event) {
			if ev.Kind == exchangeclient.EventRebound {
				mu.Lock()
				rebinds = append(rebinds, ev.Latency)
				mu.Unlock()
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
	httpClient := &http.Client{Transport: tokens.RoundTripper(rsAuthz), Timeout: 5 * time.Second}

	var grpcCalls, grpcFailed, httpCalls, httpFailed atomic.Int64
	var firstErr atomic.Value
	fail := func(counter *atomic.Int64, err error) {
		counter.Add(1)
		firstErr.CompareAndSwap(nil, err.Error())
	}
	rotations := 0
	start := time.Now()
	last := fingerprint(leafOf(t, src))
	deadline := time.Now().Add(90 * time.Second)
	tick := time.NewTicker(15 * time.Millisecond) // about 66 gRPC calls per second
	defer tick.Stop()
	var wg sync.WaitGroup
	for rotations < wantRotations && time.Now().Before(deadline) {
		<-tick.C
		grpcCalls.Add(1)
		callCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := health.Check(callCtx, &healthpb.HealthCheckRequest{})
		cancel()
		if err != nil {
			fail(&grpcFailed, err)
		}
		if grpcCalls.Load()%10 == 0 { // about 6 HTTP calls per second, concurrently
			wg.Add(1)
			go func() {
				defer wg.Done()
				httpCalls.Add(1)
				resp, err := httpClient.Get(rs.httpURL + "/orders")
				if err != nil {
					fail(&httpFailed, err)
					return
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					fail(&httpFailed, fmt.Errorf("HTTP %s: %s", resp.Status, resp.Header.Get("WWW-Authenticate")))
				}
			}()
		}
		if fp := fingerprint(leafOf(t, src)); fp != last {
			rotations++
			last = fp
		}
	}
	elapsed := time.Since(start)
	wg.Wait()
	accepted, mismatches := rs.stats(t, src)
	mu.Lock()
	p99 := percentile(rebinds, 0.99)
	mu.Unlock()
	calls, failed := grpcCalls.Load()+httpCalls.Load(), grpcFailed.Load()+httpFailed.Load()
	fmt.Printf("rotations=%d calls=%d failed=%d rebind_p99_ms=%.1f\n", rotations, calls, failed, float64(p99.Microseconds())/1000)
	rate := float64(grpcCalls.Load()) / elapsed.Seconds()
	t.Logf("over %v: grpc calls=%d (%.0f/s) failed=%d; http calls=%d failed=%d; accepted by the server=%d, binding mismatches=%d; rebinds=%d",
		elapsed.Round(time.Second), grpcCalls.Load(), rate, grpcFailed.Load(), httpCalls.Load(), httpFailed.Load(), accepted, mismatches, len(rebinds))
	if rotations < wantRotations {
		t.Errorf("only %d rotations of the client's SVID in 90s", rotations)
	}
	if failed != 0 {
		t.Errorf("%d calls failed; first: %v", failed, firstErr.Load())
	}
	if mismatches != 0 || accepted != calls-failed {
		t.Errorf("server accepted %d calls (%d binding mismatches), client made %d successful calls", accepted, mismatches, calls-failed)
	}
	if len(rebinds) < wantRotations-1 {
		t.Errorf("%d re-binds for %d rotations", len(rebinds), rotations)
	}
	if rate < 50 {
		t.Errorf("%.0f gRPC calls per second, want at least 50", rate)
	}
}

// TestReplayRefused presents tokens to the resource server on connections
// they are not bound to: another workload's token (gRPC and HTTP), and
// this workload's own token bound to its previous certificate.
func TestReplayRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{clientSVIDTTL: 20 * time.Second})
	s := e.startSTS(0, "", policyRule)
	rs := e.startResourceServer(s)
	src := e.source()
	ctx := t.Context()
	rsAuthz := tlsconfig.AuthorizeID(spiffeid.RequireFromString(resourceServerID))

	// The victim is another workload; its token is bound to its own SVID.
	victim := e.workload("victim", "spiffe://example.org/ns/prod/sa/victim")
	out, code := runWorkload(t, victim, e.spire.WorkloadAPIAddr(), "exchange", "-sts", s.url, "-audience", apiAud)
	if code != 0 {
		t.Fatalf("victim exchange: exit %d\n%s", code, out)
	}
	stolen := strings.TrimSpace(out)
	tokenFile := filepath.Join(t.TempDir(), "stolen")
	if err := os.WriteFile(tokenFile, []byte(stolen), 0o600); err != nil {
		t.Fatal(err)
	}
	out, code = runWorkload(t, victim, e.spire.WorkloadAPIAddr(), "call", "-url", rs.httpURL+"/orders", "-server-id", resourceServerID, "-token-file", tokenFile)
	if code != 0 {
		t.Fatalf("the victim's own call was refused: exit %d\n%s", code, out)
	}

	grpcCall := func(t *testing.T, token string) error {
		cfg := tlsconfig.MTLSClientConfig(src, src, rsAuthz)
		conn, err := grpc.NewClient(rs.grpcAddr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		callCtx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
		_, err = healthpb.NewHealthClient(conn).Check(callCtx, &healthpb.HealthCheckRequest{})
		return err
	}
	httpCall := func(t *testing.T, token string) (int, string) {
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsconfig.MTLSClientConfig(src, src, rsAuthz)}}
		req, _ := http.NewRequest(http.MethodGet, rs.httpURL+"/orders", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("WWW-Authenticate")
	}

	t.Run("another workload's token over gRPC", func(t *testing.T) {
		if err := grpcCall(t, stolen); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("err = %v, want Unauthenticated", err)
		}
	})
	t.Run("another workload's token over HTTP", func(t *testing.T) {
		if code, challenge := httpCall(t, stolen); code != http.StatusUnauthorized || !strings.Contains(challenge, `error="invalid_token"`) {
			t.Fatalf("got %d %q, want 401 invalid_token", code, challenge)
		}
	})
	t.Run("another workload's token through stsctl call", func(t *testing.T) {
		thief := e.workload("thief", "spiffe://example.org/ns/prod/sa/thief")
		out, code := runWorkload(t, thief, e.spire.WorkloadAPIAddr(), "call", "-url", rs.httpURL+"/orders", "-server-id", resourceServerID, "-token-file", tokenFile)
		if code != 1 || !strings.Contains(out, "401") {
			t.Fatalf("exit %d\n%s", code, out)
		}
	})
	t.Run("old-bound token on a connection with the new certificate", func(t *testing.T) {
		tok, err := e.client(s, src).Exchange(ctx, exchangeclient.Request{Audience: []string{apiAud}})
		if err != nil {
			t.Fatal(err)
		}
		if err := grpcCall(t, tok.AccessToken); err != nil {
			t.Fatalf("fresh token refused: %v", err)
		}
		old := leafOf(t, src)
		deadline := time.Now().Add(30 * time.Second)
		for fingerprint(leafOf(t, src)) == fingerprint(old) {
			if time.Now().After(deadline) {
				t.Fatal("no rotation within 30s")
			}
			time.Sleep(200 * time.Millisecond)
		}
		if !accesstoken.BoundTo(mustClaims(t, tok.AccessToken), old) {
			t.Fatal("the token was not bound to the previous certificate")
		}
		if err := grpcCall(t, tok.AccessToken); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("gRPC: err = %v, want Unauthenticated", err)
		}
		if code, _ := httpCall(t, tok.AccessToken); code != http.StatusUnauthorized {
			t.Fatalf("HTTP: got %d, want 401", code)
		}
	})
}

// mustClaims decodes a token's claims without verifying it.
func mustClaims(t *testing.T, raw string) *accesstoken.Claims {
	t.Helper()
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		t.Fatal("not a JWS")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var c accesstoken.Claims
	if err := json.Unmarshal(payload, &c); err != nil {
		t.Fatal(err)
	}
	return &c
}

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}
