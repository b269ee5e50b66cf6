package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/spiffe-sts/spiffe-sts/internal/cmdutil"
	"github.com/spiffe-sts/spiffe-sts/issuer/keyring"
)

// keysTimeout bounds a keys command.
const keysTimeout = storeStartTimeout + 10*time.Second

const keysUsage = `Usage: spiffe-sts keys <command> -config FILE

Manage the signing-key ring in the datastore of the configuration file.
The commands work while servers run; servers pick the change up within
the datastore's refresh_interval.

Commands:
  list     list the keys and their states
  rotate   create a key now; it signs after the publication window
  revoke   withdraw a key now (-kid KID); if it signs, another key takes over
`

// keysMain runs `spiffe-sts keys <command>` and returns the exit code.
func keysMain(args []string, stdout, stderr io.Writer) int {
	cmd, args, code, ok := cmdutil.Subcommand(args, stdout, stderr, keysUsage)
	if !ok {
		return code
	}
	switch cmd {
	case "list", "rotate", "revoke":
	default:
		fmt.Fprintf(stderr, "spiffe-sts keys: unknown command %q\n\n%s", cmd, keysUsage)
		return exitUsage
	}
	name := "keys " + cmd
	fs := flag.NewFlagSet("spiffe-sts "+name, flag.ContinueOnError)
	var configPath, kid string
	fs.StringVar(&configPath, "config", "", "path of the HCL configuration `file` (required)")
	synopsis := "-config FILE"
	if cmd == "revoke" {
		fs.StringVar(&kid, "kid", "", "the `kid` of the key to withdraw (required)")
		synopsis += " -kid KID"
	}
	header := fmt.Sprintf("Usage: spiffe-sts %s %s\n\n", name, synopsis)
	if code, ok := cmdutil.ParseFlags(fs, args, stdout, stderr, header); !ok {
		return code
	}
	switch {
	case fs.NArg() > 0:
		return cmdutil.UsageError(fs, stderr, header, "unexpected argument %q", fs.Arg(0))
	case configPath == "":
		return cmdutil.UsageError(fs, stderr, header, "-config is required")
	case cmd == "revoke" && kid == "":
		return cmdutil.UsageError(fs, stderr, header, "-kid is required")
	default:
		ctx, cancel := context.WithTimeout(context.Background(), keysTimeout)
		defer cancel()
		if err := keysCommand(ctx, cmd, configPath, kid, stdout); err != nil {
			fmt.Fprintln(stderr, err)
			return exitError
		}
		return exitOK
	}
}

// keysCommand opens the ring's store as run does and runs cmd on it.
func keysCommand(ctx context.Context, cmd, configPath, kid string, stdout io.Writer) error {
	cfg, err := loadConfig(configPath)
	if err != nil {
		return err
	}
	rc, closeStore, err := ringStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer closeStore()
	switch cmd {
	case "list":
		infos, err := keyring.List(ctx, rc)
		if err != nil {
			return err
		}
		return writeKeyTable(stdout, infos)
	case "rotate":
		info, err := keyring.Rotate(ctx, rc)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(stdout, "created key %s (seq %d, %s): published now, signs from %s\n",
			info.KeyID, info.Seq, info.Algorithm, formatTime(info.Activate))
		return err
	default: // revoke
		if err := keyring.Revoke(ctx, rc, kid); err != nil {
			if errors.Is(err, keyring.ErrNotFound) {
				return fmt.Errorf("no key with kid %q (see spiffe-sts keys list)", kid)
			}
			return err
		}
		if _, err := fmt.Fprintf(stdout, "revoked key %s: withdrawn from the JWKS; it signs no more\n", kid); err != nil {
			return err
		}
		infos, err := keyring.List(ctx, rc)
		if err != nil {
			return err
		}
		for _, k := range infos {
			if k.State == keyring.StateActive {
				_, err = fmt.Fprintf(stdout, "key %s (seq %d, %s) signs now\n", k.KeyID, k.Seq, k.Algorithm)
				return err
			}
		}
		return nil
	}
}

// writeKeyTable writes infos as a table, times in RFC 3339 UTC.
func writeKeyTable(w io.Writer, infos []keyring.KeyInfo) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tKID\tALG\tSTATE\tCREATED\tACTIVATES\tREVOKED")
	for _, k := range infos {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", strconv.FormatInt(k.Seq, 10), k.KeyID, k.Algorithm, k.State,
			formatTime(k.Created), formatTime(k.Activate), formatTime(k.Revoked))
	}
	return tw.Flush()
}

// formatTime formats t in RFC 3339 UTC, or "-" when it is zero.
func formatTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}
