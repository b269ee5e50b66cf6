package loadgen

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Report is one series as stsctl bench prints it.
type Report struct {
	// Series names what was loaded, e.g. http/client_credentials.
	Series string `json:"series"`
	// Mode is "closed" or "open"; Rate is the offered rate of the open loop.
	Mode        string  `json:"mode"`
	Rate        float64 `json:"rate,omitempty"`
	Connections int     `json:"connections"`
	Requests    int     `json:"requests"`
	OK          int     `json:"ok"`
	// Errors counts failed requests by OAuth error code or class.
	Errors  map[string]int `json:"errors,omitempty"`
	Elapsed time.Duration  `json:"elapsed_ns"`
	RPS     float64        `json:"rps"`
	P50     time.Duration  `json:"p50_ns"`
	P90     time.Duration  `json:"p90_ns"`
	P99     time.Duration  `json:"p99_ns"`
	Max     time.Duration  `json:"max_ns"`
	// ServerCPUPerRequest and ServerPeakRSS are set when the server's
	// process was measured (zero otherwise).
	ServerCPUPerRequest time.Duration `json:"server_cpu_per_req_ns,omitempty"`
	ServerPeakRSS       int64         `json:"server_peak_rss_bytes,omitempty"`
}

// NewReport summarizes res. rate is the open loop's rate, 0 for a closed
// loop.
func NewReport(series string, connections int, rate float64, res *Result) Report {
	r := Report{
		Series: series, Mode: "closed", Connections: connections,
		Requests: res.Requests, OK: res.OK, Errors: res.Errors, Elapsed: res.Elapsed, RPS: res.Throughput(),
		P50: res.Latency.Quantile(0.50), P90: res.Latency.Quantile(0.90), P99: res.Latency.Quantile(0.99), Max: res.Latency.Max(),
	}
	if rate > 0 {
		r.Mode, r.Rate = "open", rate
	}
	return r
}

// WithServer adds the server's counters: CPU spent during the run (after
// minus before) per completed request, and peak RSS.
func (r Report) WithServer(before, after ProcStats) Report {
	if r.Requests > 0 {
		r.ServerCPUPerRequest = (after.CPU - before.CPU) / time.Duration(r.Requests)
	}
	r.ServerPeakRSS = after.PeakRSS
	return r
}

// Format writes the report as one line of key=value pairs, latencies in
// milliseconds, errors as code:count in code order ("none" when there are
// none), and the server's counters when they were measured:
//
//	series=http/client_credentials mode=closed conns=8 requests=1000 ok=1000 errors=none rps=4000.0 p50_ms=1.950 p90_ms=2.400 p99_ms=3.100 max_ms=5.000
func (r Report) Format(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "series=%s mode=%s", r.Series, r.Mode)
	if r.Mode == "open" {
		fmt.Fprintf(&b, " rate=%s", strconv.FormatFloat(r.Rate, 'f', -1, 64))
	}
	fmt.Fprintf(&b, " conns=%d requests=%d ok=%d errors=%s rps=%.1f p50_ms=%s p90_ms=%s p99_ms=%s max_ms=%s",
		r.Connections, r.Requests, r.OK, formatErrors(r.Errors), r.RPS, ms(r.P50), ms(r.P90), ms(r.P99), ms(r.Max))
	if r.ServerCPUPerRequest > 0 || r.ServerPeakRSS > 0 {
		fmt.Fprintf(&b, " cpu_per_req_us=%.1f peak_rss_mib=%.1f", float64(r.ServerCPUPerRequest)/float64(time.Microsecond), float64(r.ServerPeakRSS)/(1<<20))
	}
	b.WriteByte('\n')
	_, err := io.WriteString(w, b.String())
	return err
}

func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 3, 64)
}

func formatErrors(errs map[string]int) string {
	if len(errs) == 0 {
		return "none"
	}
	parts := make([]string, 0, len(errs))
	for _, code := range slices.Sorted(maps.Keys(errs)) {
		parts = append(parts, code+":"+strconv.Itoa(errs[code]))
	}
	return strings.Join(parts, ",")
}
