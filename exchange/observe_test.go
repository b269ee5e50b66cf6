package exchange_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/spiffe-sts/spiffe-sts/audit"
	"github.com/spiffe-sts/spiffe-sts/exchange"
	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
	"github.com/spiffe-sts/spiffe-sts/metrics"
)

// memAudit is an in-memory audit sink that keeps each record as the JSON
// line audit.Log would write; fail, when set, makes writes fail.
type memAudit struct {
	mu    sync.Mutex
	lines []string
	fail  error
}

func (m *memAudit) Write(r *audit.Record) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.fail != nil {
		return m.fail
	}
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	m.lines = append(m.lines, string(b))
	return nil
}

func (m *memAudit) Check() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.fail
}

func (m *memAudit) mark() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.lines)
}

// since returns the records written after mark.
func (m *memAudit) since(mark int) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.lines[mark:]...)
}

// checkAudit checks that exactly one record was written after mark, with
// the outcome (the OAuth error code, or "" for an issued token) and
// request id (when not ""), and that it holds none of secrets (the raw
// tokens of the request and response), not even a signature part of one.
func checkAudit(t *testing.T, m *memAudit, mark int, code, requestID string, secrets ...string) audit.Record {
	t.Helper()
	lines := m.since(mark)
	if len(lines) != 1 {
		t.Fatalf("%d audit records, want 1: %q", len(lines), lines)
	}
	var rec audit.Record
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
		t.Fatal(err)
	}
	wantOutcome := audit.OutcomeIssued
	if code != "" {
		wantOutcome = audit.OutcomeRefused
	}
	if rec.Outcome != wantOutcome || rec.Error != code {
		t.Errorf("audit outcome, error = %q, %q; want %q, %q: %s", rec.Outcome, rec.Error, wantOutcome, code, lines[0])
	}
	if requestID != "" && rec.RequestID != requestID {
		t.Errorf("audit request_id = %q, the caller got %q", rec.RequestID, requestID)
	}
	if rec.RequestID == "" || rec.Time.IsZero() || rec.Transport == "" {
		t.Errorf("audit record lacks request_id, time or transport: %s", lines[0])
	}
	if code == "" && (rec.JTI == "" || rec.KID == "" || rec.Caller == "" || rec.X5TS256 == "" || rec.Subject == "" || len(rec.Audience) == 0) {
		t.Errorf("issued-token record lacks jti, kid, caller, x5t#S256, subject or audience: %s", lines[0])
	}
	checkNoSecrets(t, lines[0], secrets...)
	return rec
}

// checkNoSecrets fails t if line holds one of secrets (raw tokens) or a
// part of one.
func checkNoSecrets(t *testing.T, line string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s == "" {
			continue
		}
		parts := strings.Split(s, ".")
		for _, p := range append(parts, s) {
			if len(p) >= 16 && strings.Contains(line, p) {
				t.Errorf("audit record holds (part of) a raw token: %s", line)
			}
		}
	}
}

// confirmations is a fake exchange.BundleConfirmations.
type confirmations map[spiffeid.TrustDomain]time.Time

func (c confirmations) BundleConfirmed(td spiffeid.TrustDomain) (time.Time, bool) {
	at, ok := c[td]
	return at, ok
}

// TestStaleBundleFailsClosed checks readiness and the refusal of callers
// against the age of their trust domain's bundle (max_bundle_age 5m,
// bundle_hard_limit 15m), over HTTP and gRPC.
func TestStaleBundleFailsClosed(t *testing.T) {
	now := time.Now()
	td := spiffeid.RequireTrustDomainFromString("example.org")
	fed := spiffeid.RequireTrustDomainFromString("partner.example")
	type expected struct {
		code     string // "" for a token
		grpcCode codes.Code
		notReady string // a line of the readiness error; "" for ready
	}
	tests := []struct {
		name             string
		confirmed        confirmations
		overrideExpected func(*expected)
	}{
		{name: "baseline: confirmed now", confirmed: confirmations{td: now, fed: now}},
		{
			name:      "older than max_bundle_age: not ready, still served",
			confirmed: confirmations{td: now.Add(-6 * time.Minute), fed: now},
			overrideExpected: func(e *expected) {
				e.notReady = `bundle of trust domain "example.org": last confirmed by the Workload API 6m0s ago, over max_bundle_age 5m0s`
			},
		},
		{
			name:      "older than bundle_hard_limit: refused",
			confirmed: confirmations{td: now.Add(-16 * time.Minute), fed: now},
			overrideExpected: func(e *expected) {
				e.code, e.grpcCode = "temporarily_unavailable", codes.Unavailable
				e.notReady = `bundle of trust domain "example.org": last confirmed by the Workload API 16m0s ago, over max_bundle_age 5m0s`
			},
		},
		{
			name:      "never confirmed: refused",
			confirmed: confirmations{fed: now},
			overrideExpected: func(e *expected) {
				e.code, e.grpcCode = "temporarily_unavailable", codes.Unavailable
				e.notReady = `bundle of trust domain "example.org": never confirmed by the Workload API`
			},
		},
		{
			name:      "a federated trust domain stale: not ready, own callers served",
			confirmed: confirmations{td: now, fed: now.Add(-time.Hour)},
			overrideExpected: func(e *expected) {
				e.notReady = `bundle of trust domain "partner.example": last confirmed by the Workload API 1h0m0s ago, over max_bundle_age 5m0s`
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := expected{grpcCode: codes.OK}
			if tt.overrideExpected != nil {
				tt.overrideExpected(&want)
			}
			trail := new(memAudit)
			f := newFixture(t, func(c *exchange.Config) {
				c.FederatedTrustDomains = []spiffeid.TrustDomain{fed}
				c.Bundles = tt.confirmed
				c.Clock = func() time.Time { return now }
				c.Audit = trail
			})
			err := f.server.Ready()
			switch {
			case want.notReady == "" && err != nil:
				t.Errorf("Ready = %v, want nil", err)
			case want.notReady != "" && (err == nil || !slices.Contains(strings.Split(err.Error(), "\n"), want.notReady)):
				t.Errorf("Ready = %v, want a line %q", err, want.notReady)
			}

			params := f.exchangeParams(t)
			svid := f.svid(t, workloadID)
			resp := f.post(t, f.client(svid), formType, params.Encode())
			if got, _ := resp.body["error"].(string); got != want.code {
				t.Fatalf("HTTP error = %q, want %q: %v", got, want.code, resp.body)
			}
			if want.code != "" {
				if resp.status != 503 || resp.header.Get("Retry-After") != "5" {
					t.Errorf("HTTP %d Retry-After %q, want 503 and 5", resp.status, resp.header.Get("Retry-After"))
				}
				if resp.body["error_description"] != `the trust bundle of trust domain "example.org" is stale; retry later` {
					t.Errorf("error_description = %q", resp.body["error_description"])
				}
			}
			var trailer metadata.MD
			_, err = f.GRPCClient(t, svid).Exchange(context.Background(), protoFromForm(params), grpc.Trailer(&trailer))
			if got := status.Code(err); got != want.grpcCode {
				t.Errorf("gRPC code = %v, want %v", got, want.grpcCode)
			}
			if want.code != "" && len(trailer.Get("retry-after")) != 1 {
				t.Errorf("gRPC trailer %v lacks retry-after", trailer)
			}
			if n := len(trail.since(0)); n != 2 {
				t.Errorf("%d audit records, want 2", n)
			}
		})
	}
}

// TestAuditSinkLost checks both settings of audit.required with a sink
// whose writes fail: required refuses with temporarily_unavailable and is
// not ready; not required serves the token and stays ready.
func TestAuditSinkLost(t *testing.T) {
	for _, required := range []bool{false, true} {
		t.Run(fmt.Sprintf("required=%v", required), func(t *testing.T) {
			trail := &memAudit{fail: errors.New("disk full")}
			f := newFixture(t, func(c *exchange.Config) { c.Audit, c.AuditRequired = trail, required })
			resp := f.post(t, f.client(f.svid(t, workloadID)), formType, f.exchangeParams(t).Encode())
			err := f.server.Ready()
			if !required {
				if resp.status != 200 || err != nil {
					t.Fatalf("status %d, Ready %v; want 200 and ready: %v", resp.status, err, resp.body)
				}
				return
			}
			if resp.status != 503 || resp.body["error"] != "temporarily_unavailable" || resp.header.Get("Retry-After") == "" {
				t.Errorf("got %d %v (Retry-After %q), want 503 temporarily_unavailable", resp.status, resp.body, resp.header.Get("Retry-After"))
			}
			if _, ok := resp.body["access_token"]; ok {
				t.Error("a token was served unaudited")
			}
			if err == nil || !strings.Contains(err.Error(), "audit sink (required) failing: disk full") {
				t.Errorf("Ready = %v, want the audit sink named", err)
			}
			// The sink comes back: served again.
			trail.mu.Lock()
			trail.fail = nil
			trail.mu.Unlock()
			if resp := f.post(t, f.client(f.svid(t, workloadID)), formType, f.exchangeParams(t).Encode()); resp.status != 200 {
				t.Errorf("after the sink recovered: %d %v", resp.status, resp.body)
			}
		})
	}
}

// TestReadyzBody checks that /readyz names each failing condition.
func TestReadyzBody(t *testing.T) {
	h := exchange.HealthHandler(func() error {
		return errors.Join(errors.New("no signing key"), errors.New(`bundle of trust domain "example.org": never confirmed`))
	})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, protocol.PathReadyz, nil))
	want := "not ready\nno signing key\nbundle of trust domain \"example.org\": never confirmed\n"
	if rec.Code != 503 || rec.Body.String() != want {
		t.Errorf("GET /readyz = %d %q, want 503 %q", rec.Code, rec.Body.String(), want)
	}
}

// TestMetricsRecorded checks the token endpoint's metrics on a registry of
// its own: requests by transport, grant and outcome, tokens by rule, the
// JWT-SVID cache, and nothing left in flight.
func TestMetricsRecorded(t *testing.T) {
	reg := prometheus.NewRegistry()
	f := newFixture(t, func(c *exchange.Config) { c.Metrics = metrics.NewExchange(reg) })
	c := f.client(f.svid(t, workloadID))
	params := f.exchangeParams(t)
	for range 2 { // the second presentation hits the cache
		if resp := f.post(t, c, formType, params.Encode()); resp.status != 200 {
			t.Fatal(resp.body)
		}
	}
	params.Set("audience", "spiffe://example.org/db")
	f.post(t, c, formType, params.Encode())
	params.Set("grant_type", "password")
	f.post(t, c, formType, params.Encode())

	for _, tc := range []struct {
		metric string
		labels map[string]string
		want   float64
	}{
		{"spiffe_sts_requests_total", map[string]string{"transport": "http", "grant_type": "token_exchange", "outcome": "ok"}, 2},
		{"spiffe_sts_requests_total", map[string]string{"transport": "http", "grant_type": "token_exchange", "outcome": "invalid_target"}, 1},
		{"spiffe_sts_requests_total", map[string]string{"transport": "http", "grant_type": "other", "outcome": "unsupported_grant_type"}, 1},
		{"spiffe_sts_request_duration_seconds", map[string]string{"transport": "http", "grant_type": "token_exchange", "outcome": "ok"}, 2},
		{"spiffe_sts_tokens_issued_total", map[string]string{"rule": "spiffe://example.org/ns/prod/sa/*"}, 2},
		{"spiffe_sts_jwt_svid_cache_requests_total", map[string]string{"result": "hit"}, 2},
		{"spiffe_sts_jwt_svid_cache_requests_total", map[string]string{"result": "miss"}, 1},
		{"spiffe_sts_requests_in_flight", nil, 0},
	} {
		if got := gathered(t, reg, tc.metric, tc.labels); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.metric, tc.labels, got, tc.want)
		}
	}
}

// gathered returns the value (a histogram's count) of the first series
// of name with labels; -1 when there is none.
func gathered(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	for _, m := range seriesOf(t, g, name, labels) {
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount())
		}
	}
	return -1
}

// seriesOf returns the series of name whose labels include labels.
func seriesOf(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) []*dto.Metric {
	t.Helper()
	families, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []*dto.Metric
	for _, mf := range families {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue series
				}
			}
			out = append(out, m)
		}
	}
	return out
}
