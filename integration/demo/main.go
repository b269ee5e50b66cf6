// Command demo runs spiffe-sts end to end on a real local SPIRE: it starts
// spire-server and spire-agent on loopback (building the pinned SPIRE once,
// cached), registers spiffe-sts and a demo workload, starts spiffe-sts, has
// the workload exchange its JWT-SVID for a certificate-bound access token,
// prints the decoded token and checks its signature against the JWKS and
// its cnf against the workload's certificate, then stops everything.
//
//	go run ./integration/demo    (or: make demo)
package main

import (
	"context"
	"fmt"
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

	step("3. starting spire-server and spire-agent on 127.0.0.1")
	spire, err := harness.Start(ctx, harness.Options{Logf: logf})
	if err != nil {
		return err
	}
	defer func() {
		step("7. stopping everything the demo started")
		spire.Stop()
	}()

	step("4. registering spiffe-sts and the demo workload by executable path")
	for _, e := range []harness.Entry{
		{SPIFFEID: stsID, Selectors: []string{"unix:path:" + stsBin}},
		{SPIFFEID: workloadID, Selectors: []string{"unix:path:" + workloadBin}},
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
	args := []string{"exchange", "-sts", sts.URL, "-sts-id", stsID, "-audience", audience, "-output", "claims", "-verify"}
	logf("$ SPIFFE_ENDPOINT_SOCKET=%s stsctl %s", spire.WorkloadAPIAddr(), strings.Join(args, " "))
	cmdCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(cmdCtx, workloadBin, args...)
	cmd.Env = append(os.Environ(), "SPIFFE_ENDPOINT_SOCKET="+spire.WorkloadAPIAddr())
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("workload exchange: %w\nspiffe-sts log:\n%s", err, sts.Output())
	}
	fmt.Println()
	fmt.Println("    The token's sub and client_id are the workload's SPIFFE ID. Its cnf.x5t#S256 is the")
	fmt.Println("    SHA-256 thumbprint of the certificate the workload presented, so a resource server")
	fmt.Println("    accepts it only on an mTLS connection made with that certificate.")
	return nil
}
