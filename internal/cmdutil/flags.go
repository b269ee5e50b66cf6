package cmdutil

import (
	"errors"
	"flag"
	"fmt"
	"io"
)

// Exit codes of the commands.
const (
	ExitOK    = 0
	ExitUsage = 2
)

// PrintUsage writes header and then the flag defaults of fs to w.
func PrintUsage(fs *flag.FlagSet, w io.Writer, header string) {
	fs.SetOutput(w)
	fmt.Fprint(w, header)
	fs.PrintDefaults()
}

// ParseFlags parses args with fs. For -h it prints the usage (header and
// the flag defaults) to stdout and returns ExitOK; for a bad flag it prints
// the flag package's error and the usage to stderr and returns ExitUsage;
// ok is true when the command should go on.
func ParseFlags(fs *flag.FlagSet, args []string, stdout, stderr io.Writer, header string) (code int, ok bool) {
	fs.SetOutput(stderr)
	fs.Usage = func() {} // printed below, to stdout for -h
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			PrintUsage(fs, stdout, header)
			return ExitOK, false
		}
		PrintUsage(fs, stderr, header) // after the error the flag package printed
		return ExitUsage, false
	}
	return ExitOK, true
}

// UsageError writes "NAME: message" (NAME is the flag set's) and the usage
// to stderr and returns ExitUsage.
func UsageError(fs *flag.FlagSet, stderr io.Writer, header, format string, args ...any) int {
	fmt.Fprintf(stderr, "%s: %s\n", fs.Name(), fmt.Sprintf(format, args...))
	PrintUsage(fs, stderr, header)
	return ExitUsage
}

// Subcommand splits args into a command and its arguments. Without args it
// prints usage to stderr and returns ExitUsage; for help, -h, -help or
// --help it prints usage to stdout and returns ExitOK; ok is true when
// the caller should run cmd.
func Subcommand(args []string, stdout, stderr io.Writer, usage string) (cmd string, rest []string, code int, ok bool) {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return "", nil, ExitUsage, false
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return "", nil, ExitOK, false
	}
	return args[0], args[1:], ExitOK, true
}
