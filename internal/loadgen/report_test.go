package loadgen

import (
	"strings"
	"testing"
	"time"
)

func TestReportFormat(t *testing.T) {
	baseline := func() *Result {
		h := &Histogram{}
		// p50 reads 2.007 ms: the upper bound of 2 ms's bucket (within 1/128).
		for _, ms := range []int{1, 2, 2, 3, 9} {
			h.Record(time.Duration(ms) * time.Millisecond)
		}
		return &Result{Requests: 5, OK: 5, Errors: map[string]int{}, Latency: h, Elapsed: 2 * time.Second}
	}
	const line = "series=http/client_credentials mode=closed conns=8 requests=5 ok=5 errors=none rps=2.5 p50_ms=2.007 p90_ms=9.000 p99_ms=9.000 max_ms=9.000"
	for _, tc := range []struct {
		name   string
		rate   float64
		change func(*Result)
		server bool
		want   string
	}{
		{name: "baseline", want: line},
		{name: "open loop", rate: 2.5, want: strings.Replace(line, "mode=closed", "mode=open rate=2.5", 1)},
		{name: "errors in code order", change: func(r *Result) { r.OK = 2; r.Errors = map[string]int{"transport": 1, "invalid_grant": 2} },
			want: strings.Replace(line, "ok=5 errors=none", "ok=2 errors=invalid_grant:2,transport:1", 1)},
		{name: "server counters", server: true, want: line + " cpu_per_req_us=100000.0 peak_rss_mib=24.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := baseline()
			if tc.change != nil {
				tc.change(res)
			}
			r := NewReport("http/client_credentials", 8, tc.rate, res)
			if tc.server {
				r = r.WithServer(ProcStats{CPU: time.Second}, ProcStats{CPU: 1500 * time.Millisecond, PeakRSS: 24 << 20})
			}
			var b strings.Builder
			if err := r.Format(&b); err != nil {
				t.Fatal(err)
			}
			if got := b.String(); got != tc.want+"\n" {
				t.Errorf("got  %q\nwant %q", got, tc.want+"\n")
			}
		})
	}
}

func TestClassifyHTTP(t *testing.T) {
	for _, tc := range []struct {
		status int
		body   string
		want   string
	}{
		{200, `{"access_token":"x","token_type":"Bearer"}`, ""},
		{200, `{"token_type":"Bearer"}`, ClassBadResponse},
		{200, `not json`, ClassBadResponse},
		{400, `{"error":"invalid_target","error_description":"..."}`, "invalid_target"},
		{503, `{"error":"temporarily_unavailable"}`, "temporarily_unavailable"},
		{502, `<html>bad gateway</html>`, "http_502"},
	} {
		if got := classifyHTTP(tc.status, []byte(tc.body)); got != tc.want {
			t.Errorf("classifyHTTP(%d, %s) = %q, want %q", tc.status, tc.body, got, tc.want)
		}
	}
}
