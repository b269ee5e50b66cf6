//go:build integration

package integration

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/spiffe-sts/spiffe-sts/audit"
	"github.com/spiffe-sts/spiffe-sts/exchange/exchangeclient"
	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
	"github.com/spiffe-sts/spiffe-sts/integration/harness"
)

// limitedPolicy gives this test process (clientID) a rule of its own with
// a rate limit of one request every 2 s, two at once; every other prod
// workload falls to the wildcard rule, which has none.
const limitedPolicy = `
policy "spiffe://example.org/ns/prod/sa/client" {
  audiences = ["spiffe://example.org/api"]
  max_ttl   = "2m"
  rate_limit {
    rps   = 0.5
    burst = 2
  }
}
` + policyRule

// TestRateLimit runs the real spiffe-sts on real SPIRE with a rate limit
// on this test process's policy rule and TLS 1.3 as the minimum:
//
//  1. two requests (the burst) are served, the third is 429 with
//     Retry-After and the RFC 6749 §5.2 body, and so is, at once, a
//     fourth whose body never ends (HTTP/2);
//  2. over the gRPC API, through the client library, the same caller is
//     refused as RateLimited, at once within a budget shorter than the
//     Retry-After;
//  3. another workload (stsctl as spiffe://example.org/ns/prod/sa/web) is
//     served meanwhile;
//  4. after Retry-After, the caller is served again;
//  5. the audit file holds the refusal, and the metrics count it;
//  6. a TLS 1.2 client cannot connect.
func TestRateLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	auditPath := filepath.Join(t.TempDir(), "audit.log")
	s := e.startSTSWith(harness.STSOptions{
		Policy:   limitedPolicy,
		ExtraHCL: fmt.Sprintf("audit {\n  path = %q\n}\n\nlimits {\n  max_in_flight   = 64\n  tls_min_version = \"1.3\"\n}\n", auditPath),
	})
	src := e.source()
	c := httpClient(src, true)
	form := url.Values{"grant_type": {"client_credentials"}, "audience": {apiAud}}.Encode()
	post := func() (*http.Response, map[string]any) {
		t.Helper()
		return s.post(t, c, form)
	}

	// 1. The burst, then 429.
	for i := range 2 {
		if resp, body := post(); resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d of the burst: %d %v", i+1, resp.StatusCode, body)
		}
	}
	refusedAt := time.Now()
	resp, body := post()
	retryAfter, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	if resp.StatusCode != http.StatusTooManyRequests || err != nil || retryAfter < 1 || retryAfter > 2 {
		t.Fatalf("third request: %d Retry-After %q %v; want 429 and 1 or 2 s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	wantDesc := fmt.Sprintf("the client's rate limit is exceeded; retry after %d s", retryAfter)
	if body["error"] != "temporarily_unavailable" || body["error_description"] != wantDesc {
		t.Errorf("body %v, want temporarily_unavailable %q", body, wantDesc)
	}
	requestID := resp.Header.Get("X-Request-Id")
	checkRefusedBeforeBody(t, src, s.url)

	// 2. The gRPC API, through the client library, within a budget
	// shorter than Retry-After.
	grpcClient, err := exchangeclient.New(t.Context(), exchangeclient.WithIssuerURL(s.url), exchangeclient.WithX509Source(src),
		exchangeclient.WithServerID(spiffeid.RequireFromString(stsID)), exchangeclient.WithGRPC())
	if err != nil {
		t.Fatal(err)
	}
	defer grpcClient.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	_, err = grpcClient.Exchange(ctx, exchangeclient.Request{Audience: []string{apiAud}})
	cancel()
	if perr, ok := errors.AsType[protocol.Error](err); !ok || !perr.RateLimited || perr.RetryAfter < time.Second {
		t.Errorf("gRPC exchange over the limit: %v, want a RateLimited temporarily_unavailable with RetryAfter", err)
	}

	// 3. Another caller is served.
	web := e.workload("web", "spiffe://example.org/ns/prod/sa/web")
	if out, code := runWorkload(t, web, e.spire.WorkloadAPIAddr(), "exchange", "-sts", s.url, "-audience", apiAud); code != 0 {
		t.Fatalf("another caller while this one is limited: exit %d\n%s", code, out)
	}

	// 4. Served again after Retry-After.
	time.Sleep(time.Until(refusedAt.Add(time.Duration(retryAfter) * time.Second)))
	if resp, body := post(); resp.StatusCode != http.StatusOK {
		t.Fatalf("after Retry-After: %d %v", resp.StatusCode, body)
	}

	// 5. The refusal's audit record, and the metrics.
	rec := findAuditRecord(t, auditPath, requestID)
	wantDetail := "rate limited: 0.5 requests/s, burst 2, of policy rule spiffe://example.org/ns/prod/sa/client"
	if rec["outcome"] != audit.OutcomeRefused || rec["error"] != "temporarily_unavailable" || rec["reason"] != wantDesc ||
		rec["detail"] != wantDetail || rec["caller"] != clientID || rec["rule"] != "spiffe://example.org/ns/prod/sa/client" {
		t.Errorf("audit record %+v, want the refusal of %s: %q, %q", rec, clientID, wantDesc, wantDetail)
	}
	for name, min := range map[string]float64{
		"spiffe_sts_rate_limited_total": 2, // HTTP and gRPC
		"spiffe_sts_requests_in_flight": 0,
	} {
		got, err := s.Metric(t.Context(), name)
		if err != nil || got < min || (min == 0 && got != 0) {
			t.Errorf("%s = %v (%v), want %v", name, got, err, min)
		}
	}

	// 6. tls_min_version = "1.3": a TLS 1.2 client cannot connect.
	old := tlsconfig.MTLSClientConfig(src, src, tlsconfig.AuthorizeID(spiffeid.RequireFromString(stsID)))
	old.MaxVersion = tls.VersionTLS12
	oldClient := &http.Client{Transport: &http.Transport{TLSClientConfig: old}, Timeout: 10 * time.Second}
	if resp, err := oldClient.Get(s.url + "/jwks"); err == nil {
		resp.Body.Close()
		t.Error("a TLS 1.2 client connected; tls_min_version is 1.3")
	}
}

// checkRefusedBeforeBody sends, over HTTP/2 (where the server may answer
// before the body ends), a token request whose body never ends, from a
// caller over its rate limit: it must be refused with 429 before the
// client's 10 s timeout, not after the server's 30 s read_timeout.
func checkRefusedBeforeBody(t *testing.T, src *workloadapi.X509Source, url string) {
	t.Helper()
	cfg := tlsconfig.MTLSClientConfig(src, src, tlsconfig.AuthorizeID(spiffeid.RequireFromString(stsID)))
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}, Timeout: 10 * time.Second}
	defer c.CloseIdleConnections()
	body, w := io.Pipe()
	defer w.Close()
	go func() { _, _ = w.Write([]byte("grant_type=client_credentials&")) }()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, url+"/token", body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("a request over the limit whose body never ends: %v; want 429 before the body is read", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTooManyRequests || resp.ProtoMajor != 2 {
		t.Errorf("a request over the limit whose body never ends: %s %d, want HTTP/2 429", resp.Proto, resp.StatusCode)
	}
}

// findAuditRecord returns the record of requestID in the audit file at
// path.
func findAuditRecord(t *testing.T, path, requestID string) map[string]any {
	t.Helper()
	for _, rec := range auditRecords(t, path) {
		if rec["request_id"] == requestID {
			return rec
		}
	}
	t.Fatalf("no audit record of request %s in %s", requestID, path)
	return nil
}
