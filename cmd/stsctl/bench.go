package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
	"github.com/spiffe-sts/spiffe-sts/internal/loadgen"
)

// The bench command registers itself here, so that it lives in its own
// files.
func init() {
	commands = append(commands, command{"bench", "load a running spiffe-sts and report throughput and latency", runBench})
}

const benchHelp = `Loads a spiffe-sts over mTLS with this workload's X509-SVID from the
Workload API (as 'stsctl exchange'), over -connections keep-alive
connections, and prints one line: throughput, latency percentiles
(p50/p90/p99/max) and the failed requests by OAuth error code.

Without -rate the loop is closed: each connection sends its next request
when it has the answer to the last. With -rate R the loop is open: request
i is scheduled at start + i/R whatever the server does, and its latency
counts from that scheduled time, so a server that falls behind shows its
queue in the percentiles (coordinated omission). -connections bounds the
requests in flight.

Grants: client-credentials; jwt-svid, an exchange of one JWT-SVID reused
for every request (the server validates it once and then finds it in its
cache: the warm path); jwt-svid-distinct, exchanges of -pool distinct
JWT-SVIDs, each sent once (the cold path: every one is verified). The
Workload API hands out the same JWT-SVID for the same audiences until it
renews it, so the pool is fetched up front with a distinct second audience
each (the -sts URL plus urn:spiffe-sts:bench:N); the server accepts a
JWT-SVID that names it among its audiences. Beyond -pool requests, tokens
are reused and the run is no longer cold: the run stops at -pool requests
unless -requests says otherwise.

The run stops by itself after -duration or -requests, whichever comes
first. Only loopback targets (127.0.0.0/8, ::1, a unix:// -connect
socket) are loaded unless -allow-remote.

-start-server CONFIG starts '-server-bin run -config CONFIG' itself (its
X509-SVID must come from the same Workload API), pinned to core
-server-cpu, waits until it answers, and adds the server's CPU time per
request (utime+stime from /proc during the measured run) and peak RSS
(VmHWM) to the report; -server-pid measures a server already running.
`

// Values of -grant and -transport.
const (
	grantJWTSVIDDistinct = "jwt-svid-distinct"
	transportHTTP        = "http"
	transportGRPC        = "grpc"
	outputText           = "text"
)

// benchAudiencePrefix makes the audiences that set the pool's JWT-SVIDs apart.
const benchAudiencePrefix = "urn:spiffe-sts:bench:"

// benchFlags is the parsed command line of the bench command.
type benchFlags struct {
	stsURL      string
	stsID       spiffeid.ID
	socket      string
	connect     string
	allowRemote bool
	audiences   []string
	scope       []string
	grant       string
	pool        int
	transport   string
	http2       bool
	connections int
	rate        float64
	duration    time.Duration
	requests    int
	timeout     time.Duration
	series      string
	output      string
	startServer string
	serverBin   string
	serverCPU   int
	serverPID   int
	serverLog   string
}

// parseBenchFlags parses and checks the command line. ok is false when the
// command should exit with code.
func parseBenchFlags(args []string, stderr io.Writer) (f benchFlags, code int, ok bool) {
	fs := newFlagSet("bench", "-sts URL -audience A [flags]", benchHelp, stderr)
	fs.StringVar(&f.stsURL, "sts", "", "STS issuer `URL`, e.g. https://127.0.0.1:8443 (required)")
	stsID := fs.String("sts-id", "", "authorize exactly this STS `SPIFFE ID` (default: any ID in the workload's trust domain)")
	fs.StringVar(&f.socket, "socket", "", "Workload API `address` (default: $SPIFFE_ENDPOINT_SOCKET)")
	fs.StringVar(&f.connect, "connect", "", "dial this `address` (host:port or unix:///path) instead of the -sts host")
	fs.BoolVar(&f.allowRemote, "allow-remote", false, "allow a target that is not on this host")
	var audiences stringList
	fs.Var(&audiences, "audience", "`audience` of the tokens; repeat for more (required)")
	scope := fs.String("scope", "", "requested scopes, space-separated")
	fs.StringVar(&f.grant, "grant", grantClientCredentials, "`grant`: client-credentials, jwt-svid (one JWT-SVID reused) or jwt-svid-distinct (a pool, each used once)")
	fs.IntVar(&f.pool, "pool", 1000, "distinct JWT-SVIDs fetched up front for -grant jwt-svid-distinct")
	fs.StringVar(&f.transport, "transport", transportHTTP, "`transport`: http (the token endpoint) or grpc (the gRPC API on the same port)")
	fs.BoolVar(&f.http2, "http2", false, "use HTTP/2 for -transport http (default HTTP/1.1)")
	fs.IntVar(&f.connections, "connections", 8, "keep-alive connections, one request in flight on each")
	fs.Float64Var(&f.rate, "rate", 0, "open loop: requests a `second`, at fixed intervals (default: closed loop)")
	fs.DurationVar(&f.duration, "duration", 10*time.Second, "stop starting requests after this long (0: no limit)")
	fs.IntVar(&f.requests, "requests", 0, "stop after this many requests (0: no limit)")
	fs.DurationVar(&f.timeout, "timeout", 10*time.Second, "time limit of one request")
	fs.StringVar(&f.series, "series", "", "`name` of the series in the report (default transport/grant)")
	fs.StringVar(&f.output, "output", outputText, "output `format`: text (one key=value line) or json")
	fs.StringVar(&f.startServer, "start-server", "", "start spiffe-sts with this `config` file, and measure it")
	fs.StringVar(&f.serverBin, "server-bin", "spiffe-sts", "spiffe-sts `binary` for -start-server")
	fs.IntVar(&f.serverCPU, "server-cpu", -1, "pin the -start-server process to this `core` (default: not pinned)")
	fs.StringVar(&f.serverLog, "server-log", "", "append the -start-server process's output to this `file` (default: discarded)")
	fs.IntVar(&f.serverPID, "server-pid", 0, "measure the CPU time and peak RSS of this running server `pid`")
	positional, code, ok := parseArgs(fs, args)
	if !ok {
		return f, code, false
	}
	fail := func(format string, args ...any) (benchFlags, int, bool) {
		return f, usageError(stderr, "bench", format, args...), false
	}
	var err error
	if f.stsID, err = checkSTSArgs(positional, f.stsURL, *stsID); err != nil {
		return fail("%v", err)
	}
	if f.audiences, f.scope = audiences, strings.Fields(*scope); len(f.audiences) == 0 {
		return fail("-audience is required")
	}
	switch f.grant {
	case grantClientCredentials, grantJWTSVID:
	case grantJWTSVIDDistinct:
		if f.pool <= 0 {
			return fail("-pool must be positive")
		}
		if f.requests == 0 {
			f.requests = f.pool
		}
	default:
		return fail("-grant must be %s, %s or %s", grantClientCredentials, grantJWTSVID, grantJWTSVIDDistinct)
	}
	switch f.transport {
	case transportHTTP:
	case transportGRPC:
		if f.http2 {
			return fail("-http2 applies to -transport http (gRPC is always HTTP/2)")
		}
	default:
		return fail("-transport must be %s or %s", transportHTTP, transportGRPC)
	}
	switch {
	case f.connections <= 0:
		return fail("-connections must be positive")
	case f.rate < 0:
		return fail("-rate must not be negative")
	case f.duration < 0 || f.requests < 0:
		return fail("-duration and -requests must not be negative")
	case f.duration == 0 && f.requests == 0:
		return fail("-duration or -requests must bound the run")
	case f.timeout <= 0:
		return fail("-timeout must be positive")
	case f.output != outputText && f.output != outputJSON:
		return fail("-output must be %s or %s", outputText, outputJSON)
	case f.startServer != "" && f.serverPID != 0:
		return fail("-start-server and -server-pid are exclusive")
	case f.startServer == "" && (f.serverCPU >= 0 || f.serverLog != ""):
		return fail("-server-cpu and -server-log need -start-server")
	case f.serverPID < 0:
		return fail("-server-pid must be positive")
	}
	if f.series == "" {
		f.series = f.transport + "/" + seriesGrant(f.grant)
	}
	return f, exitOK, true
}

// seriesGrant names a grant in series names: the OAuth grant type, and
// for exchanges whether the JWT-SVID is reused.
func seriesGrant(grant string) string {
	switch grant {
	case grantJWTSVID:
		return "exchange_reused"
	case grantJWTSVIDDistinct:
		return "exchange_distinct"
	}
	return "client_credentials"
}

func runBench(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	f, code, ok := parseBenchFlags(args, stderr)
	if !ok {
		return code
	}
	fail := func(format string, args ...any) int {
		fmt.Fprintf(stderr, "stsctl bench: "+format+"\n", args...)
		return exitEnv
	}
	target, err := loadgen.ResolveTarget(ctx, f.stsURL, f.connect, f.allowRemote)
	if errors.Is(err, loadgen.ErrRemote) {
		return usageError(stderr, "bench", "%v; pass -allow-remote to load it anyway", err)
	}
	if err != nil {
		return fail("%v", err)
	}

	var wlOpts []workloadapi.ClientOption
	if f.socket != "" {
		wlOpts = append(wlOpts, workloadapi.WithAddr(f.socket))
	}
	setupCtx, cancelSetup := context.WithTimeout(ctx, 2*time.Minute)
	defer cancelSetup()
	wl, err := workloadapi.New(setupCtx, wlOpts...)
	if err != nil {
		return fail("Workload API: %v (set -socket or SPIFFE_ENDPOINT_SOCKET)", err)
	}
	defer wl.Close()
	source, err := workloadapi.NewX509Source(setupCtx, workloadapi.WithClient(wl))
	if err != nil {
		return fail("X509-SVID from the Workload API: %v", err)
	}
	defer source.Close()
	grant, err := benchGrant(setupCtx, &f, wl)
	if err != nil {
		return fail("%v", err)
	}

	pid := f.serverPID
	warmCtx, cancelWarm := context.WithCancel(setupCtx)
	defer cancelWarm()
	if f.startServer != "" {
		stop, died, serverPID, err := startBenchServer(&f, stderr)
		if err != nil {
			return fail("%v", err)
		}
		defer stop()
		pid = serverPID
		go func() {
			select {
			case <-died:
				cancelWarm()
			case <-warmCtx.Done():
			}
		}()
	}

	tlsConfig := tlsconfig.MTLSClientConfig(source, source, stsAuthorizer(source, f.stsID))
	var do loadgen.DoFunc
	if f.transport == transportGRPC {
		client, err := loadgen.NewGRPC(target, tlsConfig, f.connections, grant)
		if err != nil {
			return fail("%v", err)
		}
		defer client.Close()
		do = client.Do
	} else {
		client := loadgen.NewHTTP(target, tlsConfig, f.connections, grant, f.http2)
		defer client.Close()
		do = client.Do
	}
	// The last token of the grant is the warm-up's; the measured requests
	// use the others (see benchGrant).
	measured := len(grant.SubjectTokens) - 1
	timed := func(ctx context.Context, conn, seq int) string {
		ctx, cancel := context.WithTimeout(ctx, f.timeout)
		defer cancel()
		if measured > 0 {
			seq %= measured
		}
		return do(ctx, conn, seq)
	}
	if err := warmUp(warmCtx, f.connections, func(ctx context.Context, conn int) string {
		ctx, cancel := context.WithTimeout(ctx, f.timeout)
		defer cancel()
		return do(ctx, conn, measured)
	}); err != nil {
		return fail("%v", err)
	}
	cancelWarm()
	if f.grant == grantJWTSVIDDistinct && f.requests > f.pool {
		fmt.Fprintf(stderr, "stsctl bench: -requests %d > -pool %d: tokens are reused, and the reused ones hit the server's cache\n", f.requests, f.pool)
	}

	var before loadgen.ProcStats
	if pid != 0 {
		if before, err = loadgen.ReadProcStats(pid); err != nil {
			return fail("server counters: %v", err)
		}
	}
	runCtx, cancelRun := context.WithTimeout(ctx, f.duration+f.timeout+time.Minute)
	defer cancelRun()
	res, err := loadgen.Run(runCtx, loadgen.Config{Connections: f.connections, Rate: f.rate, Duration: f.duration, Requests: f.requests}, timed)
	if err != nil {
		return fail("%v", err)
	}
	report := loadgen.NewReport(f.series, f.connections, f.rate, res)
	if pid != 0 {
		after, err := loadgen.ReadProcStats(pid)
		if err != nil {
			return fail("server counters: %v", err)
		}
		report = report.WithServer(before, after)
	}
	if f.output == outputJSON {
		enc := json.NewEncoder(stdout)
		if err := enc.Encode(report); err != nil {
			return fail("%v", err)
		}
	} else if err := report.Format(stdout); err != nil {
		return fail("%v", err)
	}
	if ctx.Err() != nil {
		return exitEnv
	}
	if report.OK != report.Requests {
		return exitInvalid
	}
	return exitOK
}

// benchGrant builds the grant of f, fetching its JWT-SVIDs. SubjectTokens
// ends with the warm-up's token: for jwt-svid it is the one token, reused;
// for jwt-svid-distinct it is one more, so that warming up the connections
// validates none of the measured ones.
func benchGrant(ctx context.Context, f *benchFlags, wl *workloadapi.Client) (loadgen.Grant, error) {
	grant := loadgen.Grant{GrantType: protocol.GrantTypeClientCredentials, Audience: f.audiences, Scope: f.scope}
	if f.grant == grantClientCredentials {
		return grant, nil
	}
	grant.GrantType = protocol.GrantTypeTokenExchange
	n := 1
	if f.grant == grantJWTSVIDDistinct {
		n = f.pool + 1
	}
	for i := range n {
		params := jwtsvid.Params{Audience: f.stsURL}
		if f.grant == grantJWTSVIDDistinct {
			params.ExtraAudiences = []string{fmt.Sprintf("%s%d", benchAudiencePrefix, i)}
		}
		svid, err := wl.FetchJWTSVID(ctx, params)
		if err != nil {
			return grant, fmt.Errorf("JWT-SVID %d of %d from the Workload API: %w", i+1, n, err)
		}
		grant.SubjectTokens = append(grant.SubjectTokens, svid.Marshal())
	}
	return grant, nil
}

// warmUp sends one request on each connection, retrying for a server that
// is still starting, so that the measured run starts on open connections.
func warmUp(ctx context.Context, conns int, do func(ctx context.Context, conn int) string) error {
	for conn := range conns {
		for {
			code := do(ctx, conn)
			if code == "" {
				break
			}
			if code != loadgen.ClassTransport && code != loadgen.ClassCanceled {
				return fmt.Errorf("warm-up request refused: %s", code)
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("the server did not answer: %s", code)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

// startBenchServer starts the server of -start-server, pinned to
// -server-cpu when set; stop terminates it, and died is closed when it
// exits.
func startBenchServer(f *benchFlags, stderr io.Writer) (stop func(), died <-chan struct{}, pid int, err error) {
	cmd := exec.Command(f.serverBin, "run", "-config", f.startServer)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if f.serverLog != "" {
		logFile, err := os.OpenFile(f.serverLog, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			return nil, nil, 0, fmt.Errorf("server log: %w", err)
		}
		defer logFile.Close() // the child has its own descriptor
		cmd.Stdout, cmd.Stderr = logFile, logFile
	}
	var exited <-chan error
	if f.serverCPU >= 0 {
		exited, err = loadgen.StartPinned(cmd, f.serverCPU)
	} else if err = cmd.Start(); err == nil {
		c := make(chan error, 1)
		go func() { c <- cmd.Wait() }()
		exited = c
	}
	if err != nil {
		return nil, nil, 0, fmt.Errorf("starting %s: %w", f.serverBin, err)
	}
	var stopping atomic.Bool
	done := make(chan struct{})
	go func() {
		err := <-exited
		if !stopping.Load() {
			fmt.Fprintf(stderr, "stsctl bench: %s exited: %v\n", f.serverBin, err)
		}
		close(done)
	}()
	stop = func() {
		stopping.Store(true)
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}
	return stop, done, cmd.Process.Pid, nil
}
