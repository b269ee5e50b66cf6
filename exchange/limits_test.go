package exchange_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/audit"
	"github.com/spiffe-sts/spiffe-sts/exchange"
	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
	"github.com/spiffe-sts/spiffe-sts/internal/fakeclock"
	"github.com/spiffe-sts/spiffe-sts/metrics"
	stsid "github.com/spiffe-sts/spiffe-sts/spiffeid"
)

// Rule patterns of limitsPolicy.
const (
	limitedRule = "spiffe://example.org/ns/prod/sa/web"
	defaultRule = "spiffe://example.org/ns/prod/sa/*"
)

// limitsPolicy gives workloadID a rule of its own with a rate limit of
// 1/s, burst 2; otherID falls to the wildcard rule, which has none.
func limitsPolicy(t *testing.T) *stsid.Policy {
	t.Helper()
	p, err := stsid.NewPolicy([]stsid.Rule{
		{Pattern: stsid.RequirePattern(limitedRule), Audiences: []string{apiAud}, MaxTTL: time.Minute, RateLimit: &stsid.RateLimit{PerSecond: 1, Burst: 2}},
		{Pattern: stsid.RequirePattern(defaultRule), Audiences: []string{apiAud}, MaxTTL: time.Minute},
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// limitsFixture is a server with limitsPolicy, an audit trail, metrics
// and a clock that moves only when the test advances it.
type limitsFixture struct {
	*fixture
	clock *fakeclock.Clock
	trail *memAudit
	reg   *prometheus.Registry
}

func newLimitsFixture(t *testing.T, overrideConfig func(*exchange.Config)) *limitsFixture {
	f := &limitsFixture{clock: fakeclock.New(time.Now()), trail: new(memAudit), reg: prometheus.NewRegistry()}
	f.fixture = newFixture(t, func(c *exchange.Config) {
		c.Clock, c.Audit, c.Metrics, c.Policy = f.clock.Now, f.trail, metrics.NewExchange(f.reg), limitsPolicy(t)
		if overrideConfig != nil {
			overrideConfig(c)
		}
	})
	return f
}

func clientCredentials() url.Values {
	return url.Values{"grant_type": {"client_credentials"}, "audience": {apiAud}}
}

// checkRateLimited sends a request and checks the answer of a caller
// over its limit: 429, Retry-After, the RFC 6749 §5.2 body, and its one
// audit record, which it returns.
func (f *limitsFixture) checkRateLimited(t *testing.T, send func() response, retryAfter, rule string) audit.Record {
	t.Helper()
	mark := f.trail.mark()
	resp := send()
	if resp.status != 429 || resp.header.Get("Retry-After") != retryAfter {
		t.Fatalf("got %d Retry-After %q, want 429 and %s: %v", resp.status, resp.header.Get("Retry-After"), retryAfter, resp.body)
	}
	wantDesc := "the client's rate limit is exceeded; retry after " + retryAfter + " s"
	if resp.body["error"] != "temporarily_unavailable" || resp.body["error_description"] != wantDesc || len(resp.body) != 2 {
		t.Errorf("body %v, want temporarily_unavailable %q", resp.body, wantDesc)
	}
	if cc := resp.header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", cc)
	}
	rec := checkAudit(t, f.trail, mark, "temporarily_unavailable", resp.header.Get(exchange.HeaderRequestID))
	if rec.Reason != wantDesc || rec.Rule != rule || rec.Caller == "" || rec.Detail == "" {
		t.Errorf("audit record reason %q rule %q caller %q detail %q; want %q, rule %q, the caller and a detail", rec.Reason, rec.Rule, rec.Caller, rec.Detail, wantDesc, rule)
	}
	return rec
}

// poster returns a send function for checkRateLimited that posts body to
// the token endpoint with c.
func (f *limitsFixture) poster(t *testing.T, c *http.Client, body string) func() response {
	return func() response { return f.post(t, c, formType, body) }
}

// TestRateLimitPerRule checks the rate limit of a policy rule over HTTP:
// its caller is refused past the burst with Retry-After while a caller of
// a rule without a limit is served, and is served again once the bucket
// has refilled.
func TestRateLimitPerRule(t *testing.T) {
	f := newLimitsFixture(t, nil)
	limited, other := f.client(f.svid(t, workloadID)), f.client(f.svid(t, otherID))
	for i := range 2 {
		if resp := f.post(t, limited, formType, clientCredentials().Encode()); resp.status != 200 {
			t.Fatalf("request %d within the burst: %d %v", i+1, resp.status, resp.body)
		}
	}
	rec := f.checkRateLimited(t, f.poster(t, limited, clientCredentials().Encode()), "1", limitedRule)
	// Charged before the body is read: the record cannot say what was asked.
	if want := "rate limited: 1 requests/s, burst 2, of policy rule " + limitedRule; rec.Detail != want || rec.GrantType != "" {
		t.Errorf("audit detail %q grant_type %q, want %q and none", rec.Detail, rec.GrantType, want)
	}

	// A malformed request is charged too, and refused as rate limited.
	f.checkRateLimited(t, f.poster(t, limited, "grant_type=password&grant_type=x"), "1", limitedRule)

	// Another caller, under a rule without a limit, is not throttled.
	for i := range 10 {
		if resp := f.post(t, other, formType, clientCredentials().Encode()); resp.status != 200 {
			t.Fatalf("unlimited caller, request %d: %d %v", i+1, resp.status, resp.body)
		}
	}

	// Half a token: still refused, and told to wait the rest (rounded up).
	f.clock.Advance(500 * time.Millisecond)
	f.checkRateLimited(t, f.poster(t, limited, clientCredentials().Encode()), "1", limitedRule)
	f.clock.Advance(500 * time.Millisecond)
	if resp := f.post(t, limited, formType, clientCredentials().Encode()); resp.status != 200 {
		t.Fatalf("after Retry-After: %d %v", resp.status, resp.body)
	}

	checkSeries(t, f.reg, []series{
		{"spiffe_sts_requests_total", map[string]string{"transport": "http", "grant_type": "other", "outcome": "rate_limited"}, 3},
		{"spiffe_sts_requests_total", map[string]string{"transport": "http", "grant_type": "client_credentials", "outcome": "ok"}, 13},
		{"spiffe_sts_rate_limited_total", map[string]string{"rule": limitedRule}, 3},
		{"spiffe_sts_requests_in_flight", nil, 0},
	})
}

// TestRateLimitDefault checks Config.DefaultRateLimit: it limits the
// callers of a rule without a limit and callers no rule matches, and a
// rule's own limit takes precedence over it.
func TestRateLimitDefault(t *testing.T) {
	f := newLimitsFixture(t, func(c *exchange.Config) {
		c.DefaultRateLimit = &stsid.RateLimit{PerSecond: 0.25, Burst: 3}
	})
	for _, tc := range []struct {
		caller     string
		burst      int
		retryAfter string
		rule       string
	}{
		{caller: workloadID, burst: 2, retryAfter: "1", rule: limitedRule}, // its rule's 1/s
		{caller: otherID, burst: 3, retryAfter: "4", rule: defaultRule},    // the default 0.25/s
		{caller: deniedID, burst: 3, retryAfter: "4"},                      // no rule: the default
	} {
		t.Run(tc.caller, func(t *testing.T) {
			c := f.client(f.svid(t, tc.caller))
			for i := range tc.burst {
				resp := f.post(t, c, formType, clientCredentials().Encode())
				if resp.status == 429 {
					t.Fatalf("request %d of the burst %d refused: %v", i+1, tc.burst, resp.body)
				}
			}
			f.checkRateLimited(t, f.poster(t, c, clientCredentials().Encode()), tc.retryAfter, tc.rule)
		})
	}
	if got := gathered(t, f.reg, "spiffe_sts_rate_limited_total", map[string]string{"rule": ""}); got != 1 {
		t.Errorf(`rate_limited_total{rule=""} = %v, want 1`, got)
	}
}

// TestRateLimitUnlimited checks that a rule whose RateLimit is
// Unlimited exempts its callers from Config.DefaultRateLimit, while the
// callers of other rules keep theirs.
func TestRateLimitUnlimited(t *testing.T) {
	f := newLimitsFixture(t, func(c *exchange.Config) {
		c.DefaultRateLimit = &stsid.RateLimit{PerSecond: 0.25, Burst: 3}
		p, err := stsid.NewPolicy([]stsid.Rule{
			{Pattern: stsid.RequirePattern(limitedRule), Audiences: []string{apiAud}, MaxTTL: time.Minute},
			{Pattern: stsid.RequirePattern(defaultRule), Audiences: []string{apiAud}, MaxTTL: time.Minute, RateLimit: &stsid.RateLimit{Unlimited: true}},
		})
		if err != nil {
			t.Fatal(err)
		}
		c.Policy = p
	})
	gateway := f.client(f.svid(t, otherID))
	for i := range 10 {
		if resp := f.post(t, gateway, formType, clientCredentials().Encode()); resp.status != 200 {
			t.Fatalf("caller of the unlimited rule, request %d: %d %v", i+1, resp.status, resp.body)
		}
	}
	limited := f.client(f.svid(t, workloadID))
	for i := range 3 {
		if resp := f.post(t, limited, formType, clientCredentials().Encode()); resp.status != 200 {
			t.Fatalf("caller under the default, request %d of its burst: %d %v", i+1, resp.status, resp.body)
		}
	}
	f.checkRateLimited(t, f.poster(t, limited, clientCredentials().Encode()), "4", limitedRule)
}

// TestRateLimitGRPC checks the gRPC API's refusal of a caller over its
// limit, ResourceExhausted with a RetryInfo, and that HTTP and gRPC
// requests draw on one bucket.
func TestRateLimitGRPC(t *testing.T) {
	f := newLimitsFixture(t, nil)
	svid := f.svid(t, workloadID)
	if resp := f.post(t, f.client(svid), formType, clientCredentials().Encode()); resp.status != 200 {
		t.Fatal(resp.body)
	}
	api := f.GRPCClient(t, svid)
	ctx := context.Background()
	if _, err := api.Exchange(ctx, protoFromForm(clientCredentials())); err != nil {
		t.Fatalf("second request of the burst: %v", err)
	}
	mark := f.trail.mark()
	var trailer metadata.MD
	_, err := api.Exchange(ctx, protoFromForm(clientCredentials()), grpc.Trailer(&trailer))
	st := status.Convert(err)
	if st.Code() != codes.ResourceExhausted {
		t.Fatalf("gRPC code %v, want ResourceExhausted: %v", st.Code(), err)
	}
	var retry *errdetails.RetryInfo
	for _, d := range st.Details() {
		if r, ok := d.(*errdetails.RetryInfo); ok {
			retry = r
		}
	}
	if retry == nil || retry.GetRetryDelay().AsDuration() != time.Second {
		t.Errorf("RetryInfo %v, want a retry delay of 1s", retry)
	}
	perr, ok := protocol.ErrorFromStatus(st)
	wantDesc := "the client's rate limit is exceeded; retry after 1 s"
	if !ok || perr.Code != "temporarily_unavailable" || perr.Description != wantDesc || !perr.RateLimited || perr.RetryAfter != time.Second {
		t.Errorf("ErrorFromStatus = %+v, %v; want temporarily_unavailable %q, RateLimited, RetryAfter 1s", perr, ok, wantDesc)
	}
	if got := trailer.Get("retry-after"); len(got) != 1 || got[0] != "1" {
		t.Errorf("trailer retry-after %q, want 1", got)
	}
	rec := checkAudit(t, f.trail, mark, "temporarily_unavailable", trailer.Get("x-request-id")[0])
	if rec.Transport != "grpc" || rec.Rule != limitedRule {
		t.Errorf("audit transport %q rule %q, want grpc and %q", rec.Transport, rec.Rule, limitedRule)
	}
	if got := gathered(t, f.reg, "spiffe_sts_requests_total", map[string]string{"transport": "grpc", "grant_type": "client_credentials", "outcome": "rate_limited"}); got != 1 {
		t.Errorf("grpc rate_limited requests = %v, want 1", got)
	}
}

// TestRateLimitIntrospection checks that introspection requests are
// charged to their caller's bucket too, and refused with 429.
func TestRateLimitIntrospection(t *testing.T) {
	f := newLimitsFixture(t, nil)
	c := f.client(f.svid(t, workloadID))
	introspect := func() response {
		resp, raw := f.PostTo(t, c, protocol.PathIntrospect, formType, "token=not-a-token")
		out := response{status: resp.StatusCode, header: resp.Header}
		if err := json.Unmarshal(raw, &out.body); err != nil {
			t.Fatalf("response is not JSON: %q", raw)
		}
		return out
	}
	for range 2 {
		if resp := introspect(); resp.status != 200 || resp.body["active"] != false {
			t.Fatalf("within the burst: %d %v", resp.status, resp.body)
		}
	}
	if rec := f.checkRateLimited(t, introspect, "1", limitedRule); rec.Operation != audit.OperationIntrospect {
		t.Errorf("audit operation %q, want introspect", rec.Operation)
	}
	if got := gathered(t, f.reg, "spiffe_sts_introspections_total", map[string]string{"outcome": "rate_limited"}); got != 1 {
		t.Errorf(`introspections_total{outcome="rate_limited"} = %v, want 1`, got)
	}
	// The token endpoint shares the bucket.
	f.checkRateLimited(t, f.poster(t, c, clientCredentials().Encode()), "1", limitedRule)
}

// slowRequest starts a request to path with c whose body sends prefix
// and then nothing more until the test ends, when it fails. The answer,
// which the server can give only without the rest of the body, arrives
// on the channel.
func (f *limitsFixture) slowRequest(t *testing.T, c *http.Client, path, prefix string) <-chan response {
	t.Helper()
	body, w := io.Pipe()
	t.Cleanup(func() { _ = w.CloseWithError(errors.New("the test is over")) })
	req, err := http.NewRequest(http.MethodPost, f.issuerURL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", formType)
	out := make(chan response, 1)
	go func() {
		resp, err := c.Do(req)
		if err != nil {
			out <- response{body: map[string]any{"error": err.Error()}}
			return
		}
		defer resp.Body.Close()
		r := response{status: resp.StatusCode, header: resp.Header}
		_ = json.NewDecoder(resp.Body).Decode(&r.body)
		out <- r
	}()
	go func() { _, _ = w.Write([]byte(prefix)) }()
	return out
}

// TestRateLimitSlowBodies sends, on each endpoint, two requests of a
// caller limited to one request every 1000 s whose bodies never end,
// with MaxInFlight 1: the caller is charged before its body is read, so
// one of them is refused with 429 at once (not 503: the one being read
// holds no in-flight slot), and another caller is served meanwhile.
func TestRateLimitSlowBodies(t *testing.T) {
	for _, tc := range []struct {
		path, prefix, body string
	}{
		{protocol.PathToken, "grant_type=client_credentials&", clientCredentials().Encode()},
		{protocol.PathIntrospect, "token=", "token=not-a-token"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			f := newLimitsFixture(t, func(c *exchange.Config) {
				c.MaxInFlight = 1
				p, err := stsid.NewPolicy([]stsid.Rule{
					{Pattern: stsid.RequirePattern(limitedRule), Audiences: []string{apiAud}, MaxTTL: time.Minute, RateLimit: &stsid.RateLimit{PerSecond: 0.001, Burst: 1}},
					{Pattern: stsid.RequirePattern(defaultRule), Audiences: []string{apiAud}, MaxTTL: time.Minute},
				})
				if err != nil {
					t.Fatal(err)
				}
				c.Policy = p
			})
			limited := f.client(f.svid(t, workloadID))
			rec := f.checkRateLimited(t, func() response {
				first, second := f.slowRequest(t, limited, tc.path, tc.prefix), f.slowRequest(t, limited, tc.path, tc.prefix)
				select {
				case r := <-first:
					return r
				case r := <-second:
					return r
				}
			}, "1000", limitedRule)
			if rec.GrantType != "" {
				t.Errorf("audit grant_type %q of a request refused before its body was read", rec.GrantType)
			}
			resp, raw := f.PostTo(t, f.client(f.svid(t, otherID)), tc.path, formType, tc.body)
			if resp.StatusCode != 200 {
				t.Errorf("another caller while a slow body is read: %d %s; want 200", resp.StatusCode, raw)
			}
		})
	}
}

// blockingMinter holds each Mint until release is closed, so that a test
// can keep requests in flight.
type blockingMinter struct {
	exchange.Minter
	entered chan struct{}
	release chan struct{}
}

func (m *blockingMinter) Mint(ctx context.Context, claims *accesstoken.Claims, leaf *x509.Certificate, ttl time.Duration) (string, error) {
	m.entered <- struct{}{}
	<-m.release
	return m.Minter.Mint(ctx, claims, leaf, ttl)
}

// TestMaxInFlight holds one request in flight with MaxInFlight 1: every
// other authenticated request, on every path, is refused with 503 and Retry-After: 1
// (gRPC Unavailable), audited and counted as overloaded, until it is
// done; then they are served, and nothing is left counted in flight.
func TestMaxInFlight(t *testing.T) {
	var minter *blockingMinter
	f := newLimitsFixture(t, func(c *exchange.Config) {
		c.MaxInFlight = 1
		minter = &blockingMinter{Minter: c.Minter, entered: make(chan struct{}), release: make(chan struct{})}
		c.Minter = minter
	})
	svid := f.svid(t, otherID)
	held := make(chan response, 1)
	go func() { held <- f.post(t, f.client(svid), formType, clientCredentials().Encode()) }()
	<-minter.entered

	mark := f.trail.mark()
	resp := f.post(t, f.client(f.svid(t, workloadID)), formType, clientCredentials().Encode())
	if resp.status != 503 || resp.header.Get("Retry-After") != "1" || resp.body["error"] != "temporarily_unavailable" ||
		resp.body["error_description"] != "the server is overloaded; retry later" {
		t.Fatalf("over the cap: %d Retry-After %q %v; want 503, 1, temporarily_unavailable", resp.status, resp.header.Get("Retry-After"), resp.body)
	}
	if rec := checkAudit(t, f.trail, mark, "temporarily_unavailable", resp.header.Get(exchange.HeaderRequestID)); rec.Detail != "overloaded: the in-flight request cap is reached" {
		t.Errorf("audit detail %q", rec.Detail)
	}

	mark = f.trail.mark()
	_, err := f.GRPCClient(t, svid).Exchange(context.Background(), protoFromForm(clientCredentials()))
	st := status.Convert(err)
	if perr, _ := protocol.ErrorFromStatus(st); st.Code() != codes.Unavailable || perr.RetryAfter != time.Second {
		t.Errorf("gRPC over the cap: %v (%+v), want Unavailable with a RetryInfo of 1s", err, perr)
	}
	checkAudit(t, f.trail, mark, "temporarily_unavailable", "")

	mark = f.trail.mark()
	ir, raw := f.PostTo(t, f.client(svid), protocol.PathIntrospect, formType, "token=x")
	if ir.StatusCode != 503 || ir.Header.Get("Retry-After") != "1" {
		t.Errorf("introspection over the cap: %d Retry-After %q %s", ir.StatusCode, ir.Header.Get("Retry-After"), raw)
	}
	checkAudit(t, f.trail, mark, "temporarily_unavailable", "")

	// Authentication and the rate limit come before the cap, and the
	// metadata and the JWKS are not capped.
	if jr, _ := f.PostTo(t, f.client(nil), protocol.PathToken, "text/plain", ""); jr.StatusCode != 401 {
		t.Errorf("a token request without a certificate over the cap: %d, want 401 (authentication comes first)", jr.StatusCode)
	}
	if jr, err := f.client(nil).Get(f.issuerURL + protocol.PathJWKS); err != nil || jr.StatusCode != 200 {
		t.Errorf("GET /jwks over the cap: %v %v, want 200", jr, err)
	} else {
		_ = jr.Body.Close()
	}

	close(minter.release)
	if r := <-held; r.status != 200 {
		t.Fatalf("the held request: %d %v", r.status, r.body)
	}
	go func() {
		for range minter.entered {
		}
	}()
	if resp := f.post(t, f.client(f.svid(t, workloadID)), formType, clientCredentials().Encode()); resp.status != 200 {
		t.Errorf("after the held request: %d %v", resp.status, resp.body)
	}
	checkSeries(t, f.reg, []series{
		{"spiffe_sts_requests_total", map[string]string{"transport": "http", "outcome": "overloaded"}, 1},
		{"spiffe_sts_requests_total", map[string]string{"transport": "grpc", "outcome": "overloaded"}, 1},
		{"spiffe_sts_introspections_total", map[string]string{"outcome": "overloaded"}, 1},
		{"spiffe_sts_requests_in_flight", nil, 0},
	})
}

// series is the expected value of the series of metric with labels,
// summed over those that match.
type series struct {
	metric string
	labels map[string]string
	want   float64
}

// checkSeries checks each of expected against g.
func checkSeries(t *testing.T, g prometheus.Gatherer, expected []series) {
	t.Helper()
	for _, e := range expected {
		if got := gatheredSum(t, g, e.metric, e.labels); got != e.want {
			t.Errorf("%s%v = %v, want %v", e.metric, e.labels, got, e.want)
		}
	}
}

// gatheredSum is the sum of the counters and gauges of every series of
// name with labels.
func gatheredSum(t *testing.T, g prometheus.Gatherer, name string, labels map[string]string) float64 {
	t.Helper()
	sum := 0.0
	for _, m := range seriesOf(t, g, name, labels) {
		sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
	}
	return sum
}
