// Command demo runs spiffe-sts end to end on a real local SPIRE: it starts
// spire-server and spire-agent on loopback (building the pinned SPIRE once,
// cached), registers spiffe-sts and a demo workload, starts spiffe-sts, has
// the workload exchange its JWT-SVID for a certificate-bound access token,
// prints the decoded token and checks its signature against the JWKS and
// its cnf against the workload's certificate. It then starts a resource
// server, has the workload call it with its token (accepted), has another
// workload replay the same token (refused: the token is bound to the first
// workload's certificate), and stops everything.
//
//	go run ./integration/demo    (or: make demo)
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spiffe-sts/spiffe-sts/integration/harness"
)

const (
	stsID      = "spiffe://example.org/sts"
	workloadID = "spiffe://example.org/ns/demo/sa/client"
	thiefID    = "spiffe://example.org/ns/demo/sa/thief"
	ordersID   = "spiffe://example.org/ns/demo/sa/orders"
	audience   = "spiffe://example.org/api"
	policy     = `
policy "spiffe://example.org/ns/demo/sa/*" {
  audiences      = ["spiffe://example.org/api"]
  scopes         = ["orders.read", "orders.write"]
  default_scopes = ["orders.read"]
  max_ttl        = "5m"
}
`
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "\ndemo failed: %v\n", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) {
	fmt.Printf("\n==> "+format+"\n", args...)
}

func run(ctx context.Context) error {
	logf := func(format string, args ...any) { fmt.Printf("    "+format+"\n", args...) }

	step("1. SPIRE %s (built once from the Go module proxy, then cached)", harness.SPIREVersion)
	binDir, err := harness.SPIREBinaries(ctx, logf)
	if err != nil {
		return err
	}
	logf("binaries in %s", binDir)

	work, err := os.MkdirTemp("", "sts-demo")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if err := os.Chmod(work, 0o755); err != nil {
		return err
	}
	step("2. building spiffe-sts and stsctl from this repository")
	stsBin, err := harness.BuildBinary(ctx, "./cmd/spiffe-sts", work, "spiffe-sts")
	if err != nil {
		return err
	}
	workloadBin, err := harness.BuildBinary(ctx, "./cmd/stsctl", work, "demo-workload")
	if err != nil {
		return err
	}
	thiefBin, err := harness.CopyExecutable(workloadBin, work, "thief")
	if err != nil {
		return err
	}
	ordersBin, err := harness.BuildBinary(ctx, "./examples/resource-server", work, "orders")
	if err != nil {
		return err
	}

	step("3. starting spire-server and spire-agent on 127.0.0.1")
	spire, err := harness.Start(ctx, harness.Options{Logf: logf})
	if err != nil {
		return err
	}
	defer func() {
		step("10. stopping everything the demo started")
		spire.Stop()
	}()

	step("4. registering spiffe-sts, the demo workload, the orders service and a thief by executable path")
	for _, e := range []harness.Entry{
		{SPIFFEID: stsID, Selectors: []string{"unix:path:" + stsBin}},
		{SPIFFEID: workloadID, Selectors: []string{"unix:path:" + workloadBin}},
		{SPIFFEID: ordersID, Selectors: []string{"unix:path:" + ordersBin}},
		{SPIFFEID: thiefID, Selectors: []string{"unix:path:" + thiefBin}},
	} {
		if err := spire.Register(ctx, e); err != nil {
			return err
		}
	}

	step("5. starting spiffe-sts (its X509-SVID and bundles come from the Workload API)")
	dataDir := filepath.Join(work, "data")
	sts, err := harness.StartSTS(ctx, spire, harness.STSOptions{Bin: stsBin, DataDir: dataDir, Dir: work, Policy: policy, LogLevel: "info"})
	if err != nil {
		return err
	}
	defer func() { _ = sts.Stop() }()
	logf("issuer %s, ready (health %s/readyz)", sts.URL, sts.HealthURL)

	step("6. the workload exchanges its JWT-SVID for a bound access token")
	if _, err := workload(ctx, spire, workloadBin, os.Stdout, "exchange", "-sts", sts.URL, "-sts-id", stsID, "-audience", audience, "-output", "claims", "-verify"); err != nil {
		return fmt.Errorf("workload exchange: %w\nspiffe-sts log:\n%s", err, sts.Output())
	}
	fmt.Println()
	fmt.Println("    sub and client_id are the workload's SPIFFE ID; cnf.x5t#S256 is the SHA-256 thumbprint")
	fmt.Println("    of the certificate it presented.")

	step("7. starting the orders service (a resource server that accepts tokens for %s)", audience)
	grpcPort, err := harness.FreePort()
	if err != nil {
		return err
	}
	httpPort, err := harness.FreePort()
	if err != nil {
		return err
	}
	orders, err := harness.StartProcess(ordersBin, []string{
		"-grpc-addr", fmt.Sprintf("127.0.0.1:%d", grpcPort), "-http-addr", fmt.Sprintf("127.0.0.1:%d", httpPort),
		"-sts", sts.URL, "-sts-id", stsID, "-audience", audience,
	}, []string{"SPIFFE_ENDPOINT_SOCKET=" + spire.WorkloadAPIAddr()}, filepath.Join(work, "orders.log"))
	if err != nil {
		return err
	}
	defer func() { _ = orders.Stop() }()
	if err := waitFor(ctx, orders, "resource-server: gRPC on"); err != nil {
		return err
	}
	ordersURL := fmt.Sprintf("https://127.0.0.1:%d/orders", httpPort)
	logf("orders service at %s", ordersURL)

	step("8. the workload calls the orders service with its token")
	token, err := workload(ctx, spire, workloadBin, nil, "exchange", "-sts", sts.URL, "-sts-id", stsID, "-audience", audience)
	if err != nil {
		return fmt.Errorf("workload exchange: %w", err)
	}
	tokenFile := filepath.Join(work, "token")
	if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
		return err
	}
	if _, err := workload(ctx, spire, workloadBin, os.Stdout, "call", "-url", ordersURL, "-server-id", ordersID, "-token-file", tokenFile); err != nil {
		return fmt.Errorf("the workload's own call was refused: %w\norders log:\n%s", err, orders.Output())
	}

	step("9. a thief (another workload, with its own valid SVID) replays the same token")
	out, err := workload(ctx, spire, thiefBin, os.Stdout, "call", "-url", ordersURL, "-server-id", ordersID, "-token-file", tokenFile)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(out, "401") {
		return fmt.Errorf("the stolen token was not refused (%v):\n%s", err, out)
	}
	fmt.Println()
	fmt.Println("    Refused: the token is bound to the workload's certificate, and the thief's TLS")
	fmt.Println("    connection presents a different one. A bearer token would have worked for anyone.")
	return nil
}

// workload runs a registered workload binary (stsctl) with the Workload
// API address, echoing the command and its output to echo (when not nil),
// and returns its standard output.
func workload(ctx context.Context, spire *harness.SPIRE, bin string, echo io.Writer, args ...string) (string, error) {
	if echo != nil {
		fmt.Fprintf(echo, "    $ %s %s\n", filepath.Base(bin), strings.Join(args, " "))
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), "SPIFFE_ENDPOINT_SOCKET="+spire.WorkloadAPIAddr())
	var stdout bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, os.Stderr
	if echo != nil {
		cmd.Stdout = io.MultiWriter(&stdout, echo)
	}
	err := cmd.Run()
	return strings.TrimSpace(stdout.String()), err
}

// waitFor waits until p has printed want.
func waitFor(ctx context.Context, p *harness.Process, want string) error {
	ctx, cancel := context.WithTimeout(ctx, 45*time.Second)
	defer cancel()
	for !strings.Contains(p.Output(), want) {
		select {
		case <-p.Exited():
			return fmt.Errorf("exited:\n%s", p.Output())
		case <-ctx.Done():
			return fmt.Errorf("%w:\n%s", ctx.Err(), p.Output())
		case <-time.After(100 * time.Millisecond):
		}
	}
	return nil
}
