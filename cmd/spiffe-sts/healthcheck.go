package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
)

// healthcheckTimeout bounds the probe's request.
const healthcheckTimeout = 5 * time.Second

// healthcheckMain is `spiffe-sts healthcheck -config FILE [-shallow]`, for
// container probes without curl (as `spire-server healthcheck`): it GETs
// /readyz (or /healthz with -shallow) on the health_address of the
// configuration and exits 0 when it answers 200, else 1 with the reasons
// of the body on stderr.
func healthcheckMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("spiffe-sts healthcheck", flag.ContinueOnError)
	configPath := fs.String("config", "", "path of the HCL configuration `file` (required)")
	shallow := fs.Bool("shallow", false, "check liveness (/healthz) only, not readiness (/readyz)")
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if *configPath == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "Usage: spiffe-sts healthcheck -config FILE [-shallow]")
		return exitUsage
	}
	cfg, err := loadConfig(*configPath)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitError
	}
	if cfg.Server.HealthAddress == "" {
		fmt.Fprintf(stderr, "%s: server.health_address is not set: no health listener to check\n", *configPath)
		return exitError
	}
	path := protocol.PathReadyz
	if *shallow {
		path = protocol.PathHealthz
	}
	body, err := probe(cfg.Server.HealthAddress, path)
	if err != nil {
		fmt.Fprintf(stderr, "spiffe-sts healthcheck: %v\n", err)
		return exitError
	}
	fmt.Fprint(stdout, body)
	return exitOK
}

// probe GETs path on the health listener at addr; an error carries the
// body of a response other than 200.
func probe(addr, path string) (string, error) {
	host := addr
	if strings.HasPrefix(host, ":") || strings.HasPrefix(host, "0.0.0.0:") || strings.HasPrefix(host, "[::]:") {
		host = "127.0.0.1" + host[strings.LastIndex(host, ":"):] // all interfaces: ask locally
	}
	ctx, cancel := context.WithTimeout(context.Background(), healthcheckTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+host+path, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %d\n%s", path, resp.StatusCode, strings.TrimRight(string(b), "\n"))
	}
	return string(b), nil
}
