package exchange_test

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spiffe-sts/spiffe-sts/audit"
	"github.com/spiffe-sts/spiffe-sts/exchange"
	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
	"github.com/spiffe-sts/spiffe-sts/internal/ststest"
	"github.com/spiffe-sts/spiffe-sts/metrics"
	stsid "github.com/spiffe-sts/spiffe-sts/spiffeid"
)

// exchangeForm is a JWT-SVID exchange request body for the workload.
func exchangeForm(s *ststest.STS, b *testing.B) string {
	return url.Values{
		"grant_type":         {string(protocol.GrantTypeTokenExchange)},
		"subject_token":      {s.CA.JWTSVID(b, ststest.WorkloadID, []string{s.URL}, time.Now().Add(time.Hour))},
		"subject_token_type": {string(protocol.TokenTypeJWT)},
		"audience":           {ststest.APIAudience},
	}.Encode()
}

// startObservedSTS starts a server with metrics (their own registry) and
// the audit trail (JSON lines to io.Discard) on, as in production;
// overrideConfig, when not nil, changes the configuration further.
func startObservedSTS(b *testing.B, overrideConfig func(*exchange.Config)) *ststest.STS {
	trail, err := audit.Open(audit.Config{Path: audit.Stdout, Stdout: io.Discard})
	if err != nil {
		b.Fatal(err)
	}
	return ststest.Start(b, func(c *exchange.Config) {
		c.Metrics = metrics.NewExchange(prometheus.NewRegistry())
		c.Audit = trail
		if overrideConfig != nil {
			overrideConfig(c)
		}
	})
}

// BenchmarkTokenHandler measures the server's work for one token request
// on a connection whose client chain was verified once (keep-alive):
// parsing, the subject, policy, minting (ES256) and the JSON response. TLS
// records and HTTP framing are not included.
//
//   - cold: a JWT-SVID never seen before, so its signature is checked;
//   - warm: the same JWT-SVID again (as a workload presents it until the
//     agent renews it), validated from the cache;
//   - client_credentials: no subject token.
//
// Metrics (their own registry) and the audit trail (JSON lines to
// io.Discard) are on, as in production.
func BenchmarkTokenHandler(b *testing.B) {
	s := startObservedSTS(b, nil)
	serve := newKeepAliveConn(b, s, ststest.WorkloadID).serve
	b.Run("cold", func(b *testing.B) {
		// Distinct JWT-SVIDs, made before the timer starts.
		bodies := make([]string, b.N)
		for i := range bodies {
			bodies[i] = exchangeForm(s, b)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			serve(b, bodies[i])
		}
	})
	b.Run("warm", func(b *testing.B) {
		body := exchangeForm(s, b)
		b.ReportAllocs()
		for b.Loop() {
			serve(b, body)
		}
	})
	b.Run("client_credentials", func(b *testing.B) {
		body := url.Values{"grant_type": {"client_credentials"}, "audience": {ststest.APIAudience}}.Encode()
		b.ReportAllocs()
		for b.Loop() {
			serve(b, body)
		}
	})
}

// BenchmarkTokenHandlerRateLimited is BenchmarkTokenHandler's warm path
// with a per-caller rate limit that never refuses: the cost of charging
// the caller's token bucket, which must add no allocation.
func BenchmarkTokenHandlerRateLimited(b *testing.B) {
	s := startObservedSTS(b, func(c *exchange.Config) {
		c.DefaultRateLimit = &stsid.RateLimit{PerSecond: 1e9, Burst: 1 << 30}
	})
	serve := newKeepAliveConn(b, s, ststest.WorkloadID).serve
	body := exchangeForm(s, b)
	b.ReportAllocs()
	for b.Loop() {
		serve(b, body)
	}
}

// BenchmarkTokenExchangeMTLS measures one /token JWT-SVID exchange end to
// end in-process: the HTTP/1.1 client and server over real mTLS on a
// keep-alive loopback connection. Client and server share the CPUs.
func BenchmarkTokenExchangeMTLS(b *testing.B) {
	s := ststest.Start(b, nil)
	body := exchangeForm(s, b)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: s.TLSConfig(s.WorkloadSVID(b, ststest.WorkloadID))}}
	b.ReportAllocs()
	for b.Loop() {
		req, _ := http.NewRequest(http.MethodPost, s.URL+protocol.PathToken, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
}

// BenchmarkExchangeGRPC measures the same JWT-SVID exchange as
// BenchmarkTokenExchangeMTLS over the gRPC API in-process: a gRPC-Go client
// over real mTLS to the same listener (HTTPServer), which hands the
// connection to gRPC-Go's own HTTP/2 transport. Client and server share
// the CPUs.
func BenchmarkExchangeGRPC(b *testing.B) {
	s := ststest.Start(b, nil)
	form, err := url.ParseQuery(exchangeForm(s, b))
	if err != nil {
		b.Fatal(err)
	}
	req := protoFromForm(form)
	client := s.GRPCClient(b, s.WorkloadSVID(b, ststest.WorkloadID))
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := client.Exchange(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

// keepAliveConn calls the token handler directly as one workload on one
// connection: the client chain is verified on the first request only.
type keepAliveConn struct {
	s     *ststest.STS
	ctx   context.Context
	state *tls.ConnectionState
}

func newKeepAliveConn(b *testing.B, s *ststest.STS, id string) keepAliveConn {
	return keepAliveConn{s, s.Server.ConnContext(context.Background(), nil),
		&tls.ConnectionState{PeerCertificates: s.WorkloadSVID(b, id).Certificates}}
}

// serve sends body to the token endpoint and fails b unless it gets 200.
func (c keepAliveConn) serve(b *testing.B, body string) {
	req := httptest.NewRequestWithContext(c.ctx, http.MethodPost, protocol.PathToken, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.TLS = c.state
	rec := httptest.NewRecorder()
	c.s.Server.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		b.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
}
