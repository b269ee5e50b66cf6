package accesstoken_test

import (
	"context"
	"crypto/x509"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/metrics/metricstest"
)

// TestMetrics verifies, from a known-good token, one failing token per
// outcome, and checks that each moves its own series and that cache hits
// and misses are counted.
func TestMetrics(t *testing.T) {
	ctx := context.Background()
	leaf, otherLeaf, key, keys := verifyFixture(t)
	clock := now
	baseline := func() accesstoken.Claims {
		return accesstoken.Claims{
			Issuer: issuerURL, Subject: subject, Audience: accesstoken.Audience{audience},
			Expiry: now.Add(time.Minute).Unix(), IssuedAt: now.Unix(), NotBefore: now.Unix(),
			Confirmation: accesstoken.Confirmation{X5TS256: accesstoken.Thumbprint(leaf)},
		}
	}
	signed := func(override func(*accesstoken.Claims)) string {
		c := baseline()
		override(&c)
		return key.sign(t, accesstoken.Type, c)
	}
	good := signed(func(*accesstoken.Claims) {})

	tests := []struct {
		name    string
		raw     string
		peer    *x509.Certificate
		outcome string
		cache   string // the cache result counted, "" for none
	}{
		{name: "ok", raw: good, peer: leaf, outcome: "ok", cache: "miss"},
		{name: "ok again, cached", raw: good, peer: leaf, outcome: "ok", cache: "hit"},
		{name: "cached, other certificate", raw: good, peer: otherLeaf, outcome: "not_bound", cache: "hit"},
		{name: "no certificate", raw: good, outcome: "no_certificate"},
		{name: "malformed", raw: "not.a-token", peer: leaf, outcome: "malformed", cache: "miss"},
		{name: "signature", raw: newKeyPair(t, "k1").sign(t, accesstoken.Type, baseline()), peer: leaf, outcome: "signature", cache: "miss"},
		{name: "unknown key", raw: newKeyPair(t, "k2").sign(t, accesstoken.Type, baseline()), peer: leaf, outcome: "unknown_key", cache: "miss"},
		{name: "type", raw: key.sign(t, "JWT", baseline()), peer: leaf, outcome: "type", cache: "miss"},
		{name: "issuer", raw: signed(func(c *accesstoken.Claims) { c.Issuer = "https://other" }), peer: leaf, outcome: "issuer", cache: "miss"},
		{name: "audience", raw: signed(func(c *accesstoken.Claims) { c.Audience = accesstoken.Audience{"x"} }), peer: leaf, outcome: "audience", cache: "miss"},
		{name: "expired", raw: signed(func(c *accesstoken.Claims) { c.Expiry = now.Add(-time.Minute).Unix() }), peer: leaf, outcome: "expired", cache: "miss"},
		{name: "not yet valid", raw: signed(func(c *accesstoken.Claims) { c.NotBefore = now.Add(time.Minute).Unix() }), peer: leaf, outcome: "not_yet_valid", cache: "miss"},
		{name: "not bound", raw: signed(func(*accesstoken.Claims) {}), peer: otherLeaf, outcome: "not_bound", cache: "miss"},
	}

	reg := prometheus.NewRegistry()
	m, err := accesstoken.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	v := accesstoken.NewVerifier(issuerURL, keys, &accesstoken.Config{
		Audiences: []string{audience}, Now: func() time.Time { return clock }, Metrics: m,
	})
	want := map[string]float64{}
	hits, misses := 0.0, 0.0
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _ = v.Verify(ctx, tc.raw, tc.peer)
			want[tc.outcome]++
			switch tc.cache {
			case "hit":
				hits++
			case "miss":
				misses++
			}
			checkVerifications(t, reg, want, hits, misses)
		})
	}

	// A cached token that expires is a hit with outcome "expired".
	clock = now.Add(2 * time.Minute)
	if _, err := v.Verify(ctx, good, leaf); err == nil {
		t.Fatal("expired cached token verified")
	}
	want["expired"]++
	hits++
	checkVerifications(t, reg, want, hits, misses)

	// Without a cache, nothing is a hit or a miss.
	reg2 := prometheus.NewRegistry()
	m2, _ := accesstoken.NewMetrics(reg2)
	clock = now
	uncached := accesstoken.NewVerifier(issuerURL, keys, &accesstoken.Config{
		Audiences: []string{audience}, Now: func() time.Time { return clock }, Metrics: m2, CacheSize: -1,
	})
	_, _ = uncached.Verify(ctx, good, leaf)
	_, _ = uncached.Verify(ctx, good, leaf)
	checkVerifications(t, reg2, map[string]float64{"ok": 2}, 0, 0)

	metricstest.Check(t, reg)
}

// checkVerifications compares every series with want (outcome to count;
// missing ones are 0) and the cache counts.
func checkVerifications(t *testing.T, g prometheus.Gatherer, want map[string]float64, hits, misses float64) {
	t.Helper()
	var b strings.Builder
	b.WriteString("# HELP spiffe_sts_verifier_cache_requests_total Lookups in the verifier's cache of verified tokens, by result (hit or miss).\n")
	b.WriteString("# TYPE spiffe_sts_verifier_cache_requests_total counter\n")
	b.WriteString("spiffe_sts_verifier_cache_requests_total{result=\"hit\"} " + ftoa(hits) + "\n")
	b.WriteString("spiffe_sts_verifier_cache_requests_total{result=\"miss\"} " + ftoa(misses) + "\n")
	b.WriteString("# HELP spiffe_sts_verifier_verifications_total Access token verifications by outcome.\n")
	b.WriteString("# TYPE spiffe_sts_verifier_verifications_total counter\n")
	for _, o := range []string{"audience", "expired", "issuer", "malformed", "no_certificate", "not_bound", "not_yet_valid", "ok", "other", "signature", "type", "unknown_key"} {
		b.WriteString("spiffe_sts_verifier_verifications_total{outcome=\"" + o + "\"} " + ftoa(want[o]) + "\n")
	}
	if err := testutil.GatherAndCompare(g, strings.NewReader(b.String())); err != nil {
		t.Error(err)
	}
}

func ftoa(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

// TestMetricsRegistration checks that a registry takes one Metrics:
// a second is refused with the registry's error, not silently dropped.
func TestMetricsRegistration(t *testing.T) {
	reg := prometheus.NewRegistry()
	if _, err := accesstoken.NewMetrics(reg); err != nil {
		t.Fatal(err)
	}
	if _, err := accesstoken.NewMetrics(reg); err == nil {
		t.Error("a second NewMetrics on the same registry succeeded")
	}
	if _, err := accesstoken.NewMetrics(nil); err == nil {
		t.Error("NewMetrics(nil) succeeded")
	}
}

// TestMetricsCachedAllocs checks that counting adds no allocation to a
// cache hit.
func TestMetricsCachedAllocs(t *testing.T) {
	ctx := context.Background()
	raw, keys, leaf := benchFixture(t)
	m, _ := accesstoken.NewMetrics(prometheus.NewRegistry())
	for _, cfg := range []*accesstoken.Config{{Audiences: []string{audience}}, {Audiences: []string{audience}, Metrics: m}} {
		v := accesstoken.NewVerifier(issuerURL, keys, cfg)
		if _, err := v.Verify(ctx, raw, leaf); err != nil {
			t.Fatal(err)
		}
		if n := testing.AllocsPerRun(100, func() { _, _ = v.Verify(ctx, raw, leaf) }); n != 1 {
			t.Errorf("cached Verify (metrics %v) allocates %v times, want 1 (the claims copy)", cfg.Metrics != nil, n)
		}
	}
}

// BenchmarkVerifyCachedMetrics is BenchmarkVerifyCached with Metrics: one
// atomic add more.
func BenchmarkVerifyCachedMetrics(b *testing.B) {
	m, _ := accesstoken.NewMetrics(prometheus.NewRegistry())
	benchVerifyCached(b, m)
}
