package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v3/jws"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
)

const inspectHelp = `Decodes an access token WITHOUT verifying it and prints its header, its
claims, the act chain and the certificate binding. Nothing printed is
trustworthy: use 'stsctl verify' to check the signature and the binding.

The token is the argument, or stdin when the argument is "-" or absent.
Prefer stdin: arguments are visible to other users in the process list.

The act chain (RFC 8693 §4.1) is printed current actor first:
"act: B <- A" means B acts now and A acted before it, for the subject.
`

func runInspect(_ context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := newFlagSet("inspect", "[TOKEN | -]", inspectHelp, stderr)
	positional, code, ok := parseArgs(fs, args)
	if !ok {
		return code
	}
	raw, err := readToken(positional, stdin)
	if errors.Is(err, errUsage) {
		return usageError(stderr, "inspect", "%v", err)
	} else if err != nil {
		fmt.Fprintf(stderr, "stsctl inspect: %v\n", err)
		return exitEnv
	}
	tok, err := decodeToken(raw)
	if err != nil {
		fmt.Fprintf(stderr, "stsctl inspect: malformed token: %v\n", err)
		return exitInvalid
	}
	fmt.Fprintln(stdout, "NOT VERIFIED: decoded only")
	printDecoded(stdout, tok, time.Now())
	return exitOK
}

// decodedToken is a token's content, decoded without verification.
type decodedToken struct {
	// header and claims are pretty-printed JSON.
	header, claimsJSON []byte
	keyID              string
	claims             accesstoken.Claims
}

// decodeToken decodes a JWS compact serialization and its claims. It checks
// the shape only, never the signature.
func decodeToken(raw string) (*decodedToken, error) {
	msg, err := jws.Parse([]byte(raw), jws.WithCompact())
	if err != nil {
		return nil, fmt.Errorf("not a JWS compact serialization: %w", err)
	}
	sigs := msg.Signatures()
	if len(sigs) != 1 {
		return nil, fmt.Errorf("want one signature, got %d", len(sigs))
	}
	hdrs := sigs[0].ProtectedHeaders()
	hdrJSON, err := json.Marshal(hdrs)
	if err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	var hdrMap map[string]any
	if err := json.Unmarshal(hdrJSON, &hdrMap); err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	tok := &decodedToken{}
	tok.keyID, _ = hdrs.KeyID()
	if tok.header, err = json.MarshalIndent(hdrMap, "", "  "); err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}

	// Print every claim, including unknown ones, with numbers as sent.
	dec := json.NewDecoder(bytes.NewReader(msg.Payload()))
	dec.UseNumber()
	var all map[string]any
	if err := dec.Decode(&all); err != nil {
		return nil, fmt.Errorf("claims are not a JSON object: %w", err)
	}
	if dec.More() {
		return nil, errors.New("claims are followed by extra data")
	}
	if tok.claimsJSON, err = json.MarshalIndent(all, "", "  "); err != nil {
		return nil, fmt.Errorf("claims: %w", err)
	}
	if err := json.Unmarshal(msg.Payload(), &tok.claims); err != nil {
		return nil, fmt.Errorf("claims: %w", err)
	}
	return tok, nil
}

// printDecoded prints the header and claims, then a summary.
func printDecoded(w io.Writer, tok *decodedToken, now time.Time) {
	fmt.Fprintf(w, "header:\n%s\nclaims:\n%s\n", tok.header, tok.claimsJSON)
	printSummary(w, &tok.claims, now)
	fmt.Fprintln(w, bindingLine(&tok.claims))
}

// printSummary prints the claims a reader acts on, one per line.
func printSummary(w io.Writer, c *accesstoken.Claims, now time.Time) {
	fmt.Fprintf(w, "subject: %s\n", orNone(c.Subject))
	fmt.Fprintf(w, "client_id: %s\n", orNone(c.ClientID))
	fmt.Fprintf(w, "issuer: %s\n", orNone(c.Issuer))
	fmt.Fprintf(w, "audience: %s\n", orNone(strings.Join(c.Audience, ", ")))
	fmt.Fprintf(w, "scope: %s\n", orNone(c.Scope))
	if c.IssuedAt != 0 {
		fmt.Fprintf(w, "issued: %s\n", formatTime(time.Unix(c.IssuedAt, 0)))
	}
	switch exp := time.Unix(c.Expiry, 0); {
	case c.Expiry == 0:
		fmt.Fprintln(w, "expires: none")
	case now.Before(exp):
		fmt.Fprintf(w, "expires: %s (in %s)\n", formatTime(exp), exp.Sub(now).Round(time.Second))
	default:
		fmt.Fprintf(w, "expires: %s (expired %s ago)\n", formatTime(exp), now.Sub(exp).Round(time.Second))
	}
	fmt.Fprintln(w, actLine(c.Actor))
}

// actLine renders the RFC 8693 §4.1 act chain as hops, current actor
// first.
func actLine(act *accesstoken.Actor) string {
	if act == nil {
		return "act: none (the subject acts for itself)"
	}
	var hops []string
	for a := act; a != nil; a = a.Actor {
		hops = append(hops, orNone(a.Subject))
	}
	return "act: " + strings.Join(hops, " <- ")
}

// bindingLine describes the RFC 8705 §3.1 certificate binding as claimed.
func bindingLine(c *accesstoken.Claims) string {
	if c.Confirmation.X5TS256 == "" {
		return "binding: none (no cnf x5t#S256: the token is not bound to a certificate)"
	}
	return "binding: cnf x5t#S256 " + c.Confirmation.X5TS256
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }
