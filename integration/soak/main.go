// Command soak runs spiffe-sts for a long time on a real local SPIRE under
// steady load from the client library, while the client's X509-SVID
// rotates, and checks that nothing fails and nothing leaks:
//
//  1. starts spire-server and spire-agent on loopback (SPIRE built once,
//     cached), builds spiffe-sts, registers it and this program (by its
//     executable's path) with a short X509-SVID TTL (-svid-ttl);
//
//  2. measures the peak: a closed loop of -peak-duration with
//     exchangeclient.Client.Exchange on -connections workers
//     (internal/loadgen, the engine of stsctl bench);
//
//  3. drives Client.Exchange open-loop at half the peak for -duration,
//     counting the client's SVID rotations, and samples spiffe-sts's RSS
//     (/proc/PID/status VmRSS) and goroutines (go_goroutines of /metrics)
//     once warmed up (-warmup) and at the end of the load;
//
//  4. prints one line, soak_s being the measured duration:
//
//     soak_s=600 rps=R rotations=N errors=0 rss_start_mb=A rss_end_mb=B goroutines_start=G1 goroutines_end=G2
//
// It exits 1 when a request failed, the SVID rotated fewer than
// -min-rotations times, or the server grew beyond the tolerance: RSS by
// more than 25% + 16 MiB, goroutines by more than 20% + 20.
//
//	go run ./integration/soak                  (or: make soak; SOAK_DURATION=600s)
//	go run ./integration/soak -duration 60s -svid-ttl 20s -min-rotations 2
//
// Load goes to loopback only and stops at -duration.
package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/spiffe-sts/spiffe-sts/exchange/exchangeclient"
	"github.com/spiffe-sts/spiffe-sts/integration/harness"
	"github.com/spiffe-sts/spiffe-sts/internal/loadgen"
)

const (
	stsID    = "spiffe://example.org/sts"
	clientID = "spiffe://example.org/ns/soak/sa/client"
	audience = "spiffe://example.org/api"
	policy   = `
policy "spiffe://example.org/ns/soak/sa/*" {
  audiences      = ["spiffe://example.org/api"]
  scopes         = ["read"]
  default_scopes = ["read"]
  max_ttl        = "1m"
}
`
	// requestTimeout bounds one request, retries included.
	requestTimeout = 10 * time.Second
)

// Growth tolerated between the start and the end sample.
const (
	rssGrowthFactor       = 1.25
	rssGrowthSlack        = 16 << 20
	goroutineGrowthFactor = 1.2
	goroutineGrowthSlack  = 20
)

type options struct {
	duration, warmup, peakDuration, svidTTL time.Duration
	connections, minRotations               int
}

func main() {
	var o options
	flag.DurationVar(&o.duration, "duration", 600*time.Second, "length of the open-loop soak")
	flag.DurationVar(&o.warmup, "warmup", 30*time.Second, "time into the soak of the start sample (at most a quarter of -duration)")
	flag.DurationVar(&o.peakDuration, "peak-duration", 10*time.Second, "length of the closed-loop peak measurement")
	flag.DurationVar(&o.svidTTL, "svid-ttl", 50*time.Second, "X509-SVID TTL of the client (SPIRE renews at about half its life)")
	flag.IntVar(&o.connections, "connections", 8, "workers of the peak measurement (the soak uses twice as many)")
	flag.IntVar(&o.minRotations, "min-rotations", 20, "fewest rotations of the client's X509-SVID for a pass")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o); err != nil {
		fmt.Fprintf(os.Stderr, "\nsoak failed: %v\n", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) { fmt.Printf("==> "+format+"\n", args...) }

// sample is the server's size at one moment.
type sample struct {
	rss        int64
	goroutines int
}

func (s sample) rssMB() float64 { return float64(s.rss) / (1 << 20) }

func measure(ctx context.Context, sts *harness.STS) (sample, error) {
	rss, err := sts.RSS()
	if err != nil {
		return sample{}, err
	}
	g, err := sts.Metric(ctx, "go_goroutines")
	if err != nil {
		return sample{}, err
	}
	return sample{rss: rss, goroutines: int(g)}, nil
}

func run(ctx context.Context, o options) error {
	if o.duration <= 0 || o.peakDuration <= 0 || o.svidTTL <= 0 || o.connections <= 0 {
		return errors.New("-duration, -peak-duration, -svid-ttl and -connections must be positive")
	}
	o.warmup = min(o.warmup, o.duration/4)
	logf := func(format string, args ...any) { fmt.Printf("    "+format+"\n", args...) }

	step("1. SPIRE %s, spiffe-sts, client SVID TTL %s", harness.SPIREVersion, o.svidTTL)
	work, err := os.MkdirTemp("", "sts-soak")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if err := os.Chmod(work, 0o755); err != nil {
		return err
	}
	spire, err := harness.Start(ctx, harness.Options{Logf: logf})
	if err != nil {
		return err
	}
	defer spire.Stop()
	stsBin, err := harness.BuildBinary(ctx, "./cmd/spiffe-sts", spire.Dir(), "spiffe-sts")
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	for _, e := range []harness.Entry{
		{SPIFFEID: stsID, Selectors: []string{"unix:path:" + stsBin}},
		{SPIFFEID: clientID, Selectors: []string{"unix:path:" + self}, X509SVIDTTL: o.svidTTL},
	} {
		if err := spire.Register(ctx, e); err != nil {
			return err
		}
	}
	sts, err := harness.StartSTS(ctx, spire, harness.STSOptions{
		Bin: stsBin, DataDir: filepath.Join(work, "data"), Dir: work, Policy: policy, LogLevel: "warn",
	})
	if err != nil {
		return err
	}
	defer sts.Stop()
	srcCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	src, err := workloadapi.NewX509Source(srcCtx, workloadapi.WithClientOptions(workloadapi.WithAddr(spire.WorkloadAPIAddr())))
	cancel()
	if err != nil {
		return fmt.Errorf("X509Source: %w", err)
	}
	defer src.Close()
	client, err := exchangeclient.New(ctx, exchangeclient.WithIssuerURL(sts.URL),
		exchangeclient.WithX509Source(src), exchangeclient.WithServerID(spiffeid.RequireFromString(stsID)))
	if err != nil {
		return err
	}
	defer client.Close()
	var mu sync.Mutex
	var firstErr error
	exchange := func(ctx context.Context, _, _ int) string {
		ctx, cancel := context.WithTimeout(ctx, requestTimeout)
		defer cancel()
		if _, err := client.Exchange(ctx, exchangeclient.Request{Audience: []string{audience}}); err != nil {
			mu.Lock()
			if firstErr == nil {
				firstErr = err
			}
			mu.Unlock()
			return "error"
		}
		return ""
	}

	step("2. peak: closed loop, %d workers, %s", o.connections, o.peakDuration)
	peak, err := loadgen.Run(ctx, loadgen.Config{Connections: o.connections, Duration: o.peakDuration}, exchange)
	if err != nil {
		return err
	}
	if peak.OK == 0 || peak.OK != peak.Requests {
		return fmt.Errorf("peak: %d of %d requests failed; first: %v", peak.Requests-peak.OK, peak.Requests, firstErr)
	}
	rate := peak.Throughput() / 2
	logf("peak %.0f/s (p50 %s, p99 %s); soak rate %.0f/s", peak.Throughput(), peak.Latency.Quantile(0.5), peak.Latency.Quantile(0.99), rate)

	step("3. soak: open loop at %.0f/s for %s, start sample at %s", rate, o.duration, o.warmup)
	soakCtx, stopSoak := context.WithCancel(ctx)
	defer stopSoak()
	type samples struct {
		start, end sample
		rotations  int
		err        error
	}
	observed := make(chan samples, 1)
	go func() {
		var s samples
		defer func() { observed <- s }()
		last := leafSum(src)
		startAt := time.After(o.warmup)
		endAt := time.After(o.duration - time.Second) // before the load ends
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-soakCtx.Done():
				if s.err == nil {
					s.err = errors.New("the soak ended before the end sample")
				}
				return
			case <-startAt:
				if s.start, s.err = measure(soakCtx, sts); s.err != nil {
					return
				}
				logf("start sample: rss %.1f MiB, %d goroutines", s.start.rssMB(), s.start.goroutines)
			case <-endAt:
				s.end, s.err = measure(soakCtx, sts)
				return
			case <-tick.C:
				if sum := leafSum(src); sum != last {
					s.rotations++
					last = sum
				}
			}
		}
	}()
	started := time.Now()
	res, err := loadgen.Run(ctx, loadgen.Config{Connections: 2 * o.connections, Rate: rate, Duration: o.duration}, exchange)
	elapsed := time.Since(started)
	if err != nil {
		return err
	}
	obs := <-observed // the end sample was taken before the load ended
	stopSoak()
	if obs.err != nil {
		return obs.err
	}
	errorCount := res.Requests - res.OK
	fmt.Printf("soak_s=%.0f rps=%.0f rotations=%d errors=%d rss_start_mb=%.1f rss_end_mb=%.1f goroutines_start=%d goroutines_end=%d\n",
		elapsed.Seconds(), res.Throughput(), obs.rotations, errorCount, obs.start.rssMB(), obs.end.rssMB(), obs.start.goroutines, obs.end.goroutines)

	var problems []error
	if errorCount > 0 {
		problems = append(problems, fmt.Errorf("%d of %d requests failed (%v); first: %v", errorCount, res.Requests, res.Errors, firstErr))
	}
	if obs.rotations < o.minRotations {
		problems = append(problems, fmt.Errorf("the client's X509-SVID rotated %d times, want at least %d", obs.rotations, o.minRotations))
	}
	if limit := int64(float64(obs.start.rss)*rssGrowthFactor) + rssGrowthSlack; obs.end.rss > limit {
		problems = append(problems, fmt.Errorf("RSS grew from %.1f to %.1f MiB (limit %.1f)", obs.start.rssMB(), obs.end.rssMB(), float64(limit)/(1<<20)))
	}
	if limit := int(float64(obs.start.goroutines)*goroutineGrowthFactor) + goroutineGrowthSlack; obs.end.goroutines > limit {
		problems = append(problems, fmt.Errorf("goroutines grew from %d to %d (limit %d)", obs.start.goroutines, obs.end.goroutines, limit))
	}
	return errors.Join(problems...)
}

// leafSum is the SHA-256 of the source's current leaf certificate (zero
// when it has none).
func leafSum(src *workloadapi.X509Source) [sha256.Size]byte {
	svid, err := src.GetX509SVID()
	if err != nil {
		return [sha256.Size]byte{}
	}
	return sha256.Sum256(svid.Certificates[0].Raw)
}
