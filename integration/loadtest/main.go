// Command loadtest measures spiffe-sts on a real local SPIRE with stsctl
// bench: it starts spire-server and spire-agent on loopback (building the
// pinned SPIRE once, cached), builds spiffe-sts and stsctl, registers both,
// and runs a few short series. In each, stsctl bench runs pinned to core 0
// and starts spiffe-sts pinned to core 1 (-start-server, -server-cpu 1),
// so that the server's CPU time per request is its own.
//
// Beside each series it prints the floor, measured in this same run on
// core 1 before the series, in CPU time as the server's figure is:
// floor_sign_us, one ES256 signature
// (crypto/ecdsa SignASN1 with a P-256 key over a SHA-256 digest), and for
// the cold series, whose every JWT-SVID is new, floor_verify_us too
// (VerifyASN1); ratio is the server's CPU per request over the floor
// (sign, or sign + verify for the cold series).
//
//	go run ./integration/loadtest    (or: make loadtest)
//
// -series runs only the named series (comma-separated, e.g.
// http/client_credentials,http/exchange_reused). -cpuprofile DIR builds
// spiffe-sts with its profiling hook (-tags stsprofile) and writes the
// server's CPU profile of each series to DIR/<series>.pprof, for go tool
// pprof; the profile covers the server's whole life, start-up and
// warm-up included.
//
// It is a measurement, not a test: it is not part of make test.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/spiffe-sts/spiffe-sts/integration/harness"
	"github.com/spiffe-sts/spiffe-sts/internal/loadgen"
)

const (
	stsID    = "spiffe://example.org/sts"
	benchID  = "spiffe://example.org/ns/bench/sa/loader"
	audience = "spiffe://example.org/api"
	policy   = `
policy "spiffe://example.org/ns/bench/sa/*" {
  audiences      = ["spiffe://example.org/api"]
  scopes         = ["read"]
  default_scopes = ["read"]
  max_ttl        = "5m"
}
`
	// loaderCPU runs stsctl bench, serverCPU spiffe-sts.
	loaderCPU = 0
	serverCPU = 1
)

func main() {
	duration := flag.Duration("duration", 3*time.Second, "length of each closed-loop series")
	connections := flag.Int("connections", 8, "keep-alive connections of each series")
	pool := flag.Int("pool", 2000, "distinct JWT-SVIDs of the cold series")
	only := flag.String("series", "", "run only these series (comma-separated names; default all)")
	profileDir := flag.String("cpuprofile", "", "write the server's CPU profile of each series to `DIR`/<series>.pprof")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	opts := options{duration: *duration, connections: *connections, pool: *pool, profileDir: *profileDir}
	if *only != "" {
		opts.only = strings.Split(*only, ",")
	}
	if err := run(ctx, opts); err != nil {
		fmt.Fprintf(os.Stderr, "\nloadtest failed: %v\n", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) {
	fmt.Printf("==> "+format+"\n", args...)
}

// options are the command line.
type options struct {
	duration    time.Duration
	connections int
	pool        int
	// only names the series to run; nil runs all.
	only       []string
	profileDir string
}

func run(ctx context.Context, o options) error {
	duration, connections, pool := o.duration, o.connections, o.pool
	if runtime.NumCPU() < 2 {
		return errors.New("needs two cores: one for the loader, one for the server")
	}
	logf := func(format string, args ...any) { fmt.Printf("    "+format+"\n", args...) }

	step("1. SPIRE %s (built once, then cached)", harness.SPIREVersion)
	binDir, err := harness.SPIREBinaries(ctx, logf)
	if err != nil {
		return err
	}
	logf("binaries in %s", binDir)
	work, err := os.MkdirTemp("", "sts-loadtest")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if err := os.Chmod(work, 0o755); err != nil {
		return err
	}

	step("2. building spiffe-sts and stsctl")
	var tags []string
	if o.profileDir != "" {
		if err := os.MkdirAll(o.profileDir, 0o755); err != nil {
			return err
		}
		tags = append(tags, "stsprofile")
	}
	stsBin, err := harness.BuildBinary(ctx, "./cmd/spiffe-sts", work, "spiffe-sts", tags...)
	if err != nil {
		return err
	}
	benchBin, err := harness.BuildBinary(ctx, "./cmd/stsctl", work, "stsctl")
	if err != nil {
		return err
	}

	step("3. starting SPIRE and registering spiffe-sts and the loader")
	spire, err := harness.Start(ctx, harness.Options{Logf: logf})
	if err != nil {
		return err
	}
	defer spire.Stop()
	for _, e := range []harness.Entry{
		{SPIFFEID: stsID, Selectors: []string{"unix:path:" + stsBin}},
		{SPIFFEID: benchID, Selectors: []string{"unix:path:" + benchBin}},
	} {
		if err := spire.Register(ctx, e); err != nil {
			return err
		}
	}
	port, err := harness.FreePort()
	if err != nil {
		return err
	}
	healthPort, err := harness.FreePort()
	if err != nil {
		return err
	}
	stsURL := fmt.Sprintf("https://127.0.0.1:%d", port)
	config := filepath.Join(work, "sts.hcl")
	if err := os.WriteFile(config, []byte(fmt.Sprintf(`server {
  trust_domain        = %q
  issuer_url          = %q
  bind_address        = "127.0.0.1:%d"
  health_address      = "127.0.0.1:%d"
  data_dir            = %q
  workload_api_socket = %q
  log_level           = "warn"
}
%s`, spire.TrustDomain().Name(), stsURL, port, healthPort, filepath.Join(work, "data"), spire.WorkloadAPIAddr(), policy)), 0o600); err != nil {
		return err
	}

	step("4. series: stsctl bench on core %d, spiffe-sts started by it on core %d, %d connections", loaderCPU, serverCPU, connections)
	bench := func(series string, args ...string) (loadgen.Report, error) {
		args = append([]string{"bench", "-sts", stsURL, "-sts-id", stsID, "-audience", audience,
			"-connections", fmt.Sprint(connections), "-series", series, "-output", "json",
			"-start-server", config, "-server-bin", stsBin, "-server-cpu", fmt.Sprint(serverCPU),
			"-server-log", filepath.Join(work, "sts.log")}, args...)
		var env []string
		if o.profileDir != "" {
			// stsctl bench passes its environment on to the server it starts.
			env = append(env, "SPIFFE_STS_CPUPROFILE="+filepath.Join(o.profileDir, strings.NewReplacer("/", "_", "@", "_").Replace(series)+".pprof"))
		}
		return runBench(ctx, spire, benchBin, args, env)
	}
	d := fmt.Sprint(duration)
	type series struct {
		name string
		args []string
		cold bool
	}
	all := []series{
		{name: "http/client_credentials", args: []string{"-grant", "client-credentials", "-duration", d}},
		{name: "http/exchange_reused", args: []string{"-grant", "jwt-svid", "-duration", d}},
		{name: "http/exchange_distinct", args: []string{"-grant", "jwt-svid-distinct", "-pool", fmt.Sprint(pool), "-duration", "0"}, cold: true},
		{name: "grpc/exchange_reused", args: []string{"-grant", "jwt-svid", "-transport", "grpc", "-duration", d}},
		{name: "grpc/client_credentials", args: []string{"-grant", "client-credentials", "-transport", "grpc", "-duration", d}},
		// The memory target: peak RSS under 32 concurrent keep-alive
		// clients (a later -connections overrides the default).
		{name: "http/exchange_reused@32_connections", args: []string{"-grant", "jwt-svid", "-duration", d, "-connections", "32"}},
	}
	var peak float64
	for _, s := range all {
		if o.only != nil && !slices.Contains(o.only, s.name) {
			continue
		}
		floor := measureFloor(serverCPU)
		r, err := bench(s.name, s.args...)
		if err != nil {
			return err
		}
		if s.name == "http/exchange_reused" {
			peak = r.RPS
		}
		printSeries(r, floor, s.cold)
	}
	if peak > 0 && (o.only == nil || slices.Contains(o.only, "http/exchange_reused@half_peak")) {
		// The latency target: p99 at half the peak rate, offered open loop.
		rate := fmt.Sprintf("%.0f", peak/2)
		floor := measureFloor(serverCPU)
		r, err := bench("http/exchange_reused@half_peak", "-grant", "jwt-svid", "-rate", rate, "-duration", d)
		if err != nil {
			return err
		}
		printSeries(r, floor, false)
	}
	return nil
}

// runBench runs stsctl bench pinned to the loader's core, as the
// registered workload, and decodes its report.
func runBench(ctx context.Context, spire *harness.SPIRE, bin string, args, env []string) (loadgen.Report, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(append(os.Environ(), "SPIFFE_ENDPOINT_SOCKET="+spire.WorkloadAPIAddr()), env...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	exited, err := loadgen.StartPinned(cmd, loaderCPU)
	if err != nil {
		return loadgen.Report{}, err
	}
	err = <-exited
	var r loadgen.Report
	if jerr := json.Unmarshal([]byte(stdout.String()), &r); jerr != nil {
		return r, fmt.Errorf("stsctl bench %s: %v\n%s", strings.Join(args, " "), errors.Join(err, jerr), stderr.String())
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "    stsctl bench: %v (errors=%v)\n%s", err, r.Errors, stderr.String())
	}
	return r, nil
}

// floor is the crypto floor of one request, measured on the server's core.
type floor struct{ sign, verify time.Duration }

func printSeries(r loadgen.Report, f floor, cold bool) {
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	floorCost := f.sign
	line := fmt.Sprintf("series=%s rps=%.0f p50_ms=%.3f p99_ms=%.3f cpu_per_req_us=%.1f peak_rss_mib=%.1f floor_sign_us=%.1f",
		r.Series, r.RPS, ms(r.P50), ms(r.P99), us(r.ServerCPUPerRequest), float64(r.ServerPeakRSS)/(1<<20), us(f.sign))
	if cold {
		floorCost += f.verify
		line += fmt.Sprintf(" floor_verify_us=%.1f", us(f.verify))
	}
	line += fmt.Sprintf(" ratio=%.2f", float64(r.ServerCPUPerRequest)/float64(floorCost))
	if r.Mode == "open" {
		line += fmt.Sprintf(" rate=%.0f", r.Rate)
	}
	if r.OK != r.Requests {
		line += fmt.Sprintf(" failed=%d", r.Requests-r.OK)
	}
	fmt.Println(line)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// measureFloor times one ES256 signature and one verification in this
// process, on a thread pinned to cpu (the server's, idle between series).
// The time is the thread's CPU time, as the server's figure is its
// utime+stime: on a shared host, wall time would count what other
// processes ran on that core.
func measureFloor(cpu int) floor {
	var f floor
	err := loadgen.OnCPU(cpu, func() error {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		digest := sha256.Sum256([]byte("eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJzcGlmZmUifQ"))
		sig, err := ecdsa.SignASN1(rand.Reader, key, digest[:])
		if err != nil {
			return err
		}
		f.sign = perOp(func() { _, _ = ecdsa.SignASN1(rand.Reader, key, digest[:]) })
		f.verify = perOp(func() { ecdsa.VerifyASN1(&key.PublicKey, digest[:], sig) })
		return nil
	})
	if err != nil {
		panic(err)
	}
	return f
}

// perOp runs op for about half a second of CPU time and returns its CPU
// time per call. The caller's goroutine is locked to its thread (OnCPU).
func perOp(op func()) time.Duration {
	for n := 64; ; n *= 2 {
		start := threadCPU()
		for range n {
			op()
		}
		if elapsed := threadCPU() - start; elapsed > 500*time.Millisecond {
			return elapsed / time.Duration(n)
		}
	}
}

// threadCPU is the CPU time of the calling thread (CLOCK_THREAD_CPUTIME_ID).
func threadCPU() time.Duration {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		panic(err)
	}
	return time.Duration(ts.Nano())
}
