// Command oidcissuer is an OIDC-style issuer of end-user tokens for tests
// and demos: the stand-in for a corporate identity provider whose tokens a
// mesh service exchanges at spiffe-sts (RFC 8693) to act for the user.
//
// Usage:
//
//	oidcissuer -cert-out DIR [-addr 127.0.0.1:PORT] [-issuer URL] [-alg ES256|RS256]
//
// It generates an in-memory signing key (ES256 by default) and a
// self-signed TLS certificate for the listen address, written to DIR/ca.pem
// so that clients can trust it, and serves over HTTPS:
//
//	GET  /.well-known/openid-configuration   OpenID Connect Discovery 1.0 §3 metadata
//	GET  /jwks                               the public key (RFC 7517 §5)
//	POST /token                              a signed token for the form's user
//
// POST /token stands in for a user's login, so it authenticates nobody: it
// takes the form fields sub (required), aud (one or more), scope, ttl (a Go
// duration, default 5m, at most 24h) and may_act (a SPIFFE ID, sent as the
// RFC 8693 §4.4 may_act claim), and answers
//
//	{"access_token": "<JWT>", "token_type": "Bearer", "expires_in": 300}
//
// where the JWT has the header typ "JWT" and the key's kid, and the claims
// iss, sub, aud, iat, nbf, exp, jti and, when given, scope and may_act. For
// that reason the issuer listens on loopback addresses only and answers
// /token to loopback clients only; never deploy it.
//
// -addr defaults to 127.0.0.1:0, a free port; -issuer defaults to
// https://ADDR with the port actually bound. When the server is ready, the
// command prints
//
//	oidcissuer: serving https://127.0.0.1:PORT
//
// on standard output. SIGTERM or SIGINT stop it gracefully.
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

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

// realMain runs the command with args (without the program name) and
// returns the exit code: 0 after a signal, 1 on an error, 2 on bad usage.
func realMain(args []string, stdout, stderr io.Writer) int {
	opts, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := serve(ctx, opts, stdout); err != nil {
		fmt.Fprintln(stderr, "oidcissuer:", err)
		return 1
	}
	return 0
}

// parseFlags parses and checks the command line; errors are printed to
// stderr.
func parseFlags(args []string, stderr io.Writer) (options, error) {
	var opts options
	var alg string
	fs := flag.NewFlagSet("oidcissuer", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&opts.Addr, "addr", "127.0.0.1:0", "loopback `host:port` to listen on; port 0 picks a free one")
	fs.StringVar(&opts.Issuer, "issuer", "", "issuer `URL` (\"iss\"); default https://ADDR with the bound port")
	fs.StringVar(&opts.CertOut, "cert-out", "", "`dir`ectory to write ca.pem, the server's self-signed certificate, to (required)")
	fs.StringVar(&alg, "alg", "ES256", "signature `algorithm`: ES256 or RS256")
	if err := fs.Parse(args); err != nil {
		return opts, err
	}
	var err error
	switch {
	case fs.NArg() > 0:
		err = fmt.Errorf("unexpected argument %q", fs.Arg(0))
	case opts.CertOut == "":
		err = errors.New("-cert-out is required")
	default:
		opts.Alg, err = parseAlgorithm(alg)
	}
	if err != nil {
		fmt.Fprintln(stderr, "oidcissuer:", err)
		fs.Usage()
	}
	return opts, err
}
