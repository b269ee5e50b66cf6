package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spiffe-sts/spiffe-sts/internal/cmdutil"
)

// Exit codes, as in spiffe-sts.
const (
	exitOK    = 0
	exitError = 1 // runtime or configuration error; -healthcheck: not ready
	exitUsage = 2
)

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

// realMain runs the command line args (without the program name) and
// returns the exit code.
func realMain(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("spiffe-sts-helper", flag.ContinueOnError)
	configPath := fs.String("config", "", "path of the HCL configuration `file` (required)")
	healthcheck := fs.Bool("healthcheck", false, "ask the running helper's health_address whether it is ready, and exit 0 if it is")
	const header = "Usage: spiffe-sts-helper -config FILE [-healthcheck]\n\nKeeps an X509-SVID and access tokens bound to it written as one set of files.\n\n"
	if code, ok := cmdutil.ParseFlags(fs, args, stdout, stderr, header); !ok {
		return code
	}
	switch {
	case fs.NArg() > 0:
		return cmdutil.UsageError(fs, stderr, header, "unexpected argument %q", fs.Arg(0))
	case *configPath == "":
		return cmdutil.UsageError(fs, stderr, header, "-config is required")
	}
	var err error
	if *healthcheck {
		err = checkHealth(*configPath, stdout)
	} else {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		err = run(ctx, *configPath, stderr)
	}
	if err != nil {
		fmt.Fprintln(stderr, "spiffe-sts-helper:", err)
		return exitError
	}
	return exitOK
}
