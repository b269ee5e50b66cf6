package exchangeclient_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/spiffe-sts/spiffe-sts/exchange/exchangeclient"
	"github.com/spiffe-sts/spiffe-sts/internal/fakeclock"
	"github.com/spiffe-sts/spiffe-sts/internal/ststest"
	"github.com/spiffe-sts/spiffe-sts/metrics/metricstest"
)

// counter returns the value of the series name{labels}, 0 when absent.
func counter(t *testing.T, g prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, m := range mf.GetMetric() {
			for i := 0; i+1 < len(labels); i += 2 {
				found := false
				for _, lp := range m.GetLabel() {
					found = found || (lp.GetName() == labels[i] && lp.GetValue() == labels[i+1])
				}
				if !found {
					continue metric
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// TestMetricsExchange sends a granted request, then one change per case,
// and checks the one series each moves.
func TestMetricsExchange(t *testing.T) {
	s := ststest.Start(t, nil)
	ctx := context.Background()
	reg, unreachableReg := prometheus.NewRegistry(), prometheus.NewRegistry()
	client := newClient(t, s, newSource(s, t, ststest.WorkloadID), exchangeclient.WithMetrics(reg))
	unreachable, err := exchangeclient.New(ctx, exchangeclient.WithIssuerURL("https://127.0.0.1:1"),
		exchangeclient.WithX509Source(newSource(s, t, ststest.WorkloadID)), exchangeclient.WithTimeout(2*time.Second),
		exchangeclient.WithMetrics(prometheus.WrapRegistererWith(prometheus.Labels{"client": "unreachable"}, unreachableReg)))
	if err != nil {
		t.Fatal(err)
	}
	defer unreachable.Close()

	tests := []struct {
		name           string
		client         *exchangeclient.Client
		overrideParams func(*exchangeclient.Request)
		grant, outcome string
	}{
		{name: "granted", grant: "client_credentials", outcome: "ok"},
		{name: "audience refused", overrideParams: func(r *exchangeclient.Request) { r.Audience = []string{"spiffe://example.org/not-allowed"} }, grant: "client_credentials", outcome: "invalid_target"},
		{name: "subject token refused", overrideParams: func(r *exchangeclient.Request) { r.SubjectToken = "not-a-jwt" }, grant: "token_exchange", outcome: "invalid_grant"},
		{name: "transport error", client: unreachable, grant: "client_credentials", outcome: "transport_error"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, reg, labels := client, reg, []string{"grant", tc.grant, "outcome", tc.outcome}
			if tc.client != nil {
				c, reg, labels = tc.client, unreachableReg, append(labels, "client", "unreachable")
			}
			before := counter(t, reg, "spiffe_sts_client_exchanges_total", labels...)
			total := testutil.CollectAndCount(reg, "spiffe_sts_client_exchanges_total")
			req := exchangeclient.Request{Audience: []string{ststest.APIAudience}}
			if tc.overrideParams != nil {
				tc.overrideParams(&req)
			}
			_, err := c.Exchange(ctx, req)
			if (err == nil) != (tc.outcome == "ok") {
				t.Fatalf("Exchange: %v, want outcome %s", err, tc.outcome)
			}
			if got := counter(t, reg, "spiffe_sts_client_exchanges_total", labels...); got != before+1 {
				t.Errorf("spiffe_sts_client_exchanges_total%v = %v, want %v (error %v)", labels, got, before+1, err)
			}
			if n := testutil.CollectAndCount(reg, "spiffe_sts_client_exchanges_total"); n != total {
				t.Errorf("%d series after the request, %d before: the label set is not closed", n, total)
			}
		})
	}
	metricstest.Check(t, reg)
	metricstest.Check(t, unreachableReg)
}

// TestMetricsRebind rotates the SVID: to an allowed ID (a re-binding that
// succeeds), then to a denied one (a refused re-binding, then a refused
// original grant: a refresh failure). The clock is fake and does not
// move, so Tokens does not retry.
func TestMetricsRebind(t *testing.T) {
	clk := fakeclock.New(time.Now())
	s, _ := startFakeTime(t, clk, nil)
	reg := prometheus.NewRegistry()
	src := newRotatingSource(s.CA.Bundle(), s.WorkloadSVID(t, ststest.WorkloadID))
	var rec recorder
	tokens := newTokens(t, newClient(t, s, src, exchangeclient.WithClock(clk), exchangeclient.WithMetrics(reg)),
		exchangeclient.Request{Audience: []string{ststest.APIAudience}}, exchangeclient.WithEvents(rec.record))
	if _, err := tokens.Token(context.Background(), src.leaf()); err != nil {
		t.Fatal(err)
	}

	next := s.CA.SVID(t, ststest.WorkloadID, time.Hour)
	src.rotate(next)
	rec.wait(t, 10*time.Second, "rebound", kindFor(exchangeclient.EventRebound, next.Certificates[0]))
	if got := counter(t, reg, "spiffe_sts_client_rebinds_total", "outcome", "ok"); got != 1 {
		t.Errorf(`rebinds_total{outcome="ok"} = %v, want 1`, got)
	}
	if got := counter(t, reg, "spiffe_sts_client_refresh_failures_total"); got != 0 {
		t.Errorf("refresh_failures_total = %v, want 0", got)
	}

	denied := s.CA.SVID(t, ststest.DeniedID, time.Hour)
	src.rotate(denied)
	rec.wait(t, 10*time.Second, "failed", kindFor(exchangeclient.EventFailed, denied.Certificates[0]))
	if got := counter(t, reg, "spiffe_sts_client_rebinds_total", "outcome", "unauthorized_client"); got != 1 {
		t.Errorf(`rebinds_total{outcome="unauthorized_client"} = %v, want 1`, got)
	}
	// Tokens may already have retried the original grant for the denied
	// certificate: at least one failure.
	if got := counter(t, reg, "spiffe_sts_client_refresh_failures_total"); got < 1 {
		t.Errorf("refresh_failures_total = %v, want at least 1; events %+v", got, rec.all())
	}
	metricstest.Check(t, reg)
}

// TestMetricsRegistration checks that New returns the registry's error
// for a second client on the same registry, and that a failed New leaves
// the registry as it was.
func TestMetricsRegistration(t *testing.T) {
	s := ststest.Start(t, nil)
	reg := prometheus.NewRegistry()
	newClient(t, s, newSource(s, t, ststest.WorkloadID), exchangeclient.WithMetrics(reg))
	_, err := exchangeclient.New(context.Background(), exchangeclient.WithIssuerURL(s.URL),
		exchangeclient.WithX509Source(newSource(s, t, ststest.WorkloadID)), exchangeclient.WithMetrics(reg))
	if err == nil || !strings.Contains(err.Error(), "exchangeclient: metrics:") {
		t.Fatalf("second New on one registry: %v, want a registration error", err)
	}

	fresh := prometheus.NewRegistry()
	if _, err := exchangeclient.New(context.Background(), exchangeclient.WithIssuerURL(s.URL),
		exchangeclient.WithX509Source(noSVID{}), exchangeclient.WithMetrics(fresh)); err == nil {
		t.Fatal("New without an SVID succeeded")
	}
	newClient(t, s, newSource(s, t, ststest.WorkloadID), exchangeclient.WithMetrics(fresh))
}
