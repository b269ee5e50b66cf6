package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

const callHelp = `Calls a resource server with an access token, over mTLS with this
workload's X509-SVID from the Workload API, the way a client would: the
server checks that the token is bound to the certificate of the connection.
A token bound to another workload's certificate is refused (401).

The response status and body are printed to stdout.`

func runCall(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := newFlagSet("call", "-url URL -server-id SPIFFEID -token-file FILE [flags]", callHelp, stderr)
	target := fs.String("url", "", "resource server `URL` (https, required)")
	serverID := fs.String("server-id", "", "authorize exactly this resource server `SPIFFE ID` (required)")
	socket := fs.String("socket", "", "Workload API `address` (default: $SPIFFE_ENDPOINT_SOCKET)")
	tokenFile := fs.String("token-file", "", "read the access token from this `file` (\"-\" for stdin; required)")
	timeout := fs.Duration("timeout", 30*time.Second, "time limit for the whole command")
	if _, code, ok := parseArgs(fs, args); !ok {
		return code
	}
	if *target == "" || *serverID == "" || *tokenFile == "" {
		return usageError(stderr, "call", "-url, -server-id and -token-file are required")
	}
	if !strings.HasPrefix(*target, "https://") {
		return usageError(stderr, "call", "-url must be an https URL")
	}
	id, err := spiffeid.FromString(*serverID)
	if err != nil {
		return usageError(stderr, "call", "-server-id: %v", err)
	}
	token, err := readTokenFile(*tokenFile, stdin)
	if err != nil {
		fmt.Fprintf(stderr, "stsctl call: token: %v\n", err)
		return exitEnv
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	var opts []workloadapi.X509SourceOption
	if *socket != "" {
		opts = append(opts, workloadapi.WithClientOptions(workloadapi.WithAddr(*socket)))
	}
	source, err := workloadapi.NewX509Source(ctx, opts...)
	if err != nil {
		fmt.Fprintf(stderr, "stsctl call: X509-SVID from the Workload API: %v\n", err)
		return exitEnv
	}
	defer source.Close()

	client := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsconfig.MTLSClientConfig(source, source, tlsconfig.AuthorizeID(id))}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, *target, nil)
	if err != nil {
		return usageError(stderr, "call", "-url: %v", err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := client.Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "stsctl call: %v\n", err)
		return exitEnv
	}
	defer resp.Body.Close()
	body, err := readLimited(resp.Body)
	if err != nil {
		fmt.Fprintf(stderr, "stsctl call: reading the response: %v\n", err)
		return exitEnv
	}
	fmt.Fprintf(stdout, "%s %s\n", resp.Proto, resp.Status)
	if challenge := resp.Header.Get("WWW-Authenticate"); challenge != "" {
		fmt.Fprintf(stdout, "WWW-Authenticate: %s\n", challenge)
	}
	fmt.Fprintf(stdout, "%s\n", strings.TrimSpace(string(body)))
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return exitOK
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return exitInvalid
	default:
		return exitEnv
	}
}
