package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
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
	fs.SetOutput(stderr)
	fs.Usage = func() {}
	printUsage := func(w io.Writer) {
		fs.SetOutput(w)
		fmt.Fprint(w, "Usage: spiffe-sts-helper -config FILE [-healthcheck]\n\nKeeps an X509-SVID and access tokens bound to it written as one set of files.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage(stdout)
			return exitOK
		}
		printUsage(stderr)
		return exitUsage
	}
	switch {
	case fs.NArg() > 0:
		fmt.Fprintf(stderr, "spiffe-sts-helper: unexpected argument %q\n", fs.Arg(0))
		printUsage(stderr)
		return exitUsage
	case *configPath == "":
		fmt.Fprintln(stderr, "spiffe-sts-helper: -config is required")
		printUsage(stderr)
		return exitUsage
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
