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

// Exit codes.
const (
	exitOK    = 0
	exitError = 1 // runtime or configuration error
	exitUsage = 2
)

const usage = `Usage: spiffe-sts <command> -config FILE

OAuth 2.0 token exchange (RFC 8693) for SPIFFE workloads.

Commands:
  run        run the server
  validate   check the configuration file and exit
  keys       list, rotate or revoke signing keys (spiffe-sts keys help)
  healthcheck  probe the health listener (-shallow: liveness only); exit 0 or 1
  help       show this help

Run "spiffe-sts <command> -h" for the flags of a command.
`

func main() {
	code := realMain(os.Args[1:], os.Stdout, os.Stderr)
	stopProfile()
	os.Exit(code)
}

// stopProfile flushes the CPU profile of a build with -tags stsprofile
// (cpuprofile.go); without the tag there is none.
var stopProfile = func() {}

// realMain runs the command line args (without the program name) and
// returns the exit code.
func realMain(args []string, stdout, stderr io.Writer) int {
	cmd, args, code, ok := cmdutil.Subcommand(args, stdout, stderr, usage)
	if !ok {
		return code
	}
	switch cmd {
	case "run", "validate":
	case "keys":
		return keysMain(args, stdout, stderr)
	case "healthcheck":
		return healthcheckMain(args, stdout, stderr)
	default:
		fmt.Fprintf(stderr, "spiffe-sts: unknown command %q\n\n%s", cmd, usage)
		return exitUsage
	}

	configPath, code, ok := parseFlags(cmd, args, stdout, stderr)
	if !ok {
		return code
	}
	var err error
	if cmd == "validate" {
		err = validate(configPath, stdout)
	} else {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		err = run(ctx, configPath, stdout, stderr)
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitError
	}
	return exitOK
}

// parseFlags parses the flags of cmd and returns the configuration path,
// or ok false and the exit code.
func parseFlags(cmd string, args []string, stdout, stderr io.Writer) (configPath string, code int, ok bool) {
	fs := flag.NewFlagSet("spiffe-sts "+cmd, flag.ContinueOnError)
	fs.StringVar(&configPath, "config", "", "path of the HCL configuration `file` (required)")
	header := fmt.Sprintf("Usage: spiffe-sts %s -config FILE\n\n", cmd)
	if code, ok := cmdutil.ParseFlags(fs, args, stdout, stderr, header); !ok {
		return "", code, false
	}
	switch {
	case fs.NArg() > 0:
		return "", cmdutil.UsageError(fs, stderr, header, "unexpected argument %q", fs.Arg(0)), false
	case configPath == "":
		return "", cmdutil.UsageError(fs, stderr, header, "-config is required"), false
	}
	return configPath, exitOK, true
}
