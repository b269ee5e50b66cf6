package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// Exit codes.
const (
	// exitOK: success.
	exitOK = 0
	// exitInvalid: the token was refused or is invalid.
	exitInvalid = 1
	// exitUsage: bad flags or arguments.
	exitUsage = 2
	// exitEnv: the environment failed (Workload API, network, files).
	exitEnv = 3
)

const exitCodesHelp = `
Exit codes:
  0  success
  1  the token was refused or is invalid (OAuth error from the server, verification failure)
  2  usage error
  3  environment error (Workload API unreachable, network, files)
`

// maxTokenBytes bounds a token read from stdin or a file.
const maxTokenBytes = 64 << 10

// command is a subcommand: run parses args and returns the exit code.
type command struct {
	name, summary string
	run           func(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int
}

var commands = []command{
	{"exchange", "get an access token for this workload from the STS", runExchange},
	{"inspect", "decode a token without verifying it", runInspect},
	{"verify", "verify a token and its certificate binding offline", runVerify},
	{"call", "call a resource server with a token over mTLS", runCall},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run dispatches to the subcommand named by args[0].
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return exitUsage
	}
	name := args[0]
	switch name {
	case "-h", "-help", "--help":
		usage(stdout)
		return exitOK
	case "help":
		if len(args) == 1 {
			usage(stdout)
			return exitOK
		}
		name, args = args[1], []string{args[1], "-h"}
	}
	for _, cmd := range commands {
		if cmd.name == name {
			return cmd.run(ctx, args[1:], stdin, stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "stsctl: unknown command %q\n\n", name)
	usage(stderr)
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprint(w, "Usage: stsctl <command> [flags] [args]\n\nstsctl gets, inspects and verifies spiffe-sts access tokens.\n\nCommands:\n")
	for _, cmd := range commands {
		fmt.Fprintf(w, "  %-9s %s\n", cmd.name, cmd.summary)
	}
	fmt.Fprint(w, "\nRun 'stsctl <command> -h' for the flags of a command.\n", exitCodesHelp)
}

// newFlagSet returns a flag set whose -h text shows the synopsis, the
// description, the flags and the exit codes.
func newFlagSet(name, synopsis, description string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("stsctl "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: stsctl %s %s\n\n%s", name, synopsis, description)
		hasFlags := false
		fs.VisitAll(func(*flag.Flag) { hasFlags = true })
		if hasFlags {
			fmt.Fprint(fs.Output(), "\nFlags:\n")
			fs.PrintDefaults()
		}
		fmt.Fprint(fs.Output(), exitCodesHelp)
	}
	return fs
}

// parseArgs parses flags that may come before or after the positional
// arguments, which it returns. ok is false when the command should exit
// with code: exitOK after -h, exitUsage after a bad flag.
func parseArgs(fs *flag.FlagSet, args []string) (positional []string, code int, ok bool) {
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, exitOK, false
			}
			return nil, exitUsage, false
		}
		args = fs.Args()
		if len(args) == 0 {
			return positional, exitOK, true
		}
		positional, args = append(positional, args[0]), args[1:]
	}
}

// usageError reports a usage error, with a pointer to -h.
func usageError(stderr io.Writer, name, format string, args ...any) int {
	fmt.Fprintf(stderr, "stsctl %s: %s\nRun 'stsctl %s -h' for usage.\n", name, fmt.Sprintf(format, args...), name)
	return exitUsage
}

// errUsage marks errors in the command line rather than the environment.
var errUsage = errors.New("usage")

// readToken returns the token given as the only argument, or read from
// stdin when the argument is "-" or absent.
func readToken(positional []string, stdin io.Reader) (string, error) {
	switch {
	case len(positional) > 1:
		return "", fmt.Errorf("%w: expected one token argument, got %d", errUsage, len(positional))
	case len(positional) == 1 && positional[0] != "-":
		return strings.TrimSpace(positional[0]), nil
	}
	raw, err := readLimited(stdin)
	if err != nil {
		return "", fmt.Errorf("reading the token from stdin: %w", err)
	}
	tok := strings.TrimSpace(string(raw))
	if tok == "" {
		return "", fmt.Errorf("%w: no token on stdin", errUsage)
	}
	return tok, nil
}

// readTokenFile reads a token from path, or from stdin when path is "-".
func readTokenFile(path string, stdin io.Reader) (string, error) {
	r := stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return "", err
		}
		defer f.Close()
		r = f
	}
	raw, err := readLimited(r)
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", path, err)
	}
	tok := string(bytes.TrimSpace(raw))
	if tok == "" {
		return "", fmt.Errorf("%s holds no token", path)
	}
	return tok, nil
}

func readLimited(r io.Reader) ([]byte, error) {
	raw, err := io.ReadAll(io.LimitReader(r, maxTokenBytes+1))
	if err != nil {
		return nil, err
	}
	if len(raw) > maxTokenBytes {
		return nil, fmt.Errorf("more than %d bytes", maxTokenBytes)
	}
	return raw, nil
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string { return strings.Join(*l, ", ") }

func (l *stringList) Set(v string) error {
	if v == "" {
		return errors.New("must not be empty")
	}
	*l = append(*l, v)
	return nil
}
