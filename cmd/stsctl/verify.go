package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
)

const verifyHelp = `Verifies an access token the way a resource server does: its signature with
the issuer's keys, its typ, iss, aud, exp and nbf, and that its RFC 8705
cnf x5t#S256 binding matches the client certificate in -cert (the first
CERTIFICATE block of the PEM file, normally the leaf of the X509-SVID the
token was presented with). Prints a summary of the verified claims.

-jwks is a JWKS file or an https URL such as https://sts.example.org/jwks;
an https URL is trusted through the system roots plus -ca.

The token is the argument, or stdin when the argument is "-" or absent.
Prefer stdin: arguments are visible to other users in the process list.
`

func runVerify(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := newFlagSet("verify", "-jwks FILE_OR_HTTPS_URL -cert PEM_FILE -issuer URL -audience A [flags] [TOKEN | -]", verifyHelp, stderr)
	jwksSrc := fs.String("jwks", "", "JWKS `file or https URL` with the issuer's public keys (required)")
	certFile := fs.String("cert", "", "PEM `file` whose first certificate the token must be bound to (required)")
	issuerURL := fs.String("issuer", "", "expected issuer `URL`, the iss claim (required)")
	var audiences stringList
	fs.Var(&audiences, "audience", "accepted `audience`; repeat for more (at least one required)")
	caFile := fs.String("ca", "", "PEM `file` of extra CA certificates to trust for an https -jwks URL")
	leeway := fs.Duration("leeway", 0, "tolerated clock skew on exp and nbf")
	timeout := fs.Duration("timeout", 30*time.Second, "time limit for fetching an https -jwks URL")
	positional, code, ok := parseArgs(fs, args)
	if !ok {
		return code
	}
	switch {
	case *jwksSrc == "":
		return usageError(stderr, "verify", "-jwks is required")
	case strings.HasPrefix(*jwksSrc, "http://"):
		return usageError(stderr, "verify", "-jwks URL must be https")
	case *certFile == "":
		return usageError(stderr, "verify", "-cert is required")
	case *issuerURL == "":
		return usageError(stderr, "verify", "-issuer is required")
	case len(audiences) == 0:
		return usageError(stderr, "verify", "-audience is required")
	case *leeway < 0 || *timeout <= 0:
		return usageError(stderr, "verify", "-leeway must not be negative and -timeout must be positive")
	case *caFile != "" && !strings.HasPrefix(*jwksSrc, "https://"):
		return usageError(stderr, "verify", "-ca applies to an https -jwks URL only")
	}
	raw, err := readToken(positional, stdin)
	if errors.Is(err, errUsage) {
		return usageError(stderr, "verify", "%v", err)
	} else if err != nil {
		fmt.Fprintf(stderr, "stsctl verify: %v\n", err)
		return exitEnv
	}

	leaf, err := readLeaf(*certFile)
	if err != nil {
		fmt.Fprintf(stderr, "stsctl verify: %v\n", err)
		return exitEnv
	}
	keys, err := loadJWKS(ctx, *jwksSrc, *caFile, *timeout)
	if err != nil {
		fmt.Fprintf(stderr, "stsctl verify: %v\n", err)
		return exitEnv
	}
	verifier := accesstoken.NewVerifier(*issuerURL, keys, &accesstoken.Config{Audiences: audiences, Leeway: *leeway})
	claims, err := verifier.Verify(ctx, raw, leaf)
	if err != nil {
		reportInvalid(stderr, "verify", err, raw, leaf, "the certificate in "+*certFile)
		return exitInvalid
	}
	fmt.Fprintln(stdout, "VERIFIED")
	printVerified(stdout, raw, claims, *jwksSrc, "the certificate in "+*certFile+describeCert(leaf))
	printSummary(stdout, claims, time.Now())
	return exitOK
}

// printVerified prints what was verified.
func printVerified(w io.Writer, raw string, claims *accesstoken.Claims, keySource, certDesc string) {
	kid := "(unknown)"
	if tok, err := decodeToken(raw); err == nil {
		kid = tok.keyID
	}
	fmt.Fprintf(w, "signature: verified with key %s from %s\n", kid, keySource)
	fmt.Fprintf(w, "claims: iss %s and aud %s accepted; valid until %s\n", claims.Issuer, strings.Join(claims.Audience, ", "), formatTime(time.Unix(claims.Expiry, 0)))
	fmt.Fprintf(w, "binding: cnf x5t#S256 %s matches %s\n", claims.Confirmation.X5TS256, certDesc)
}

// reportInvalid explains why a token failed verification, naming the two
// thumbprints when the binding is what failed.
func reportInvalid(stderr io.Writer, name string, err error, raw string, leaf *x509.Certificate, certDesc string) {
	if !errors.Is(err, accesstoken.ErrNotBound) {
		fmt.Fprintf(stderr, "stsctl %s: invalid token: %v\n", name, err)
		return
	}
	claimed := "(none)"
	if tok, decErr := decodeToken(raw); decErr == nil && tok.claims.Confirmation.X5TS256 != "" {
		claimed = tok.claims.Confirmation.X5TS256
	}
	fmt.Fprintf(stderr, "stsctl %s: invalid token: binding: cnf x5t#S256 %s does not match %s (x5t#S256 %s)\n",
		name, claimed, certDesc, accesstoken.Thumbprint(leaf))
}

// describeCert names the SPIFFE ID of an X509-SVID, if cert is one.
func describeCert(cert *x509.Certificate) string {
	if id, err := spiffeIDOf(cert); err == nil {
		return " (" + id.String() + ")"
	}
	return ""
}

func spiffeIDOf(cert *x509.Certificate) (spiffeid.ID, error) {
	if len(cert.URIs) != 1 {
		return spiffeid.ID{}, errors.New("not an X509-SVID")
	}
	return spiffeid.FromURI(cert.URIs[0])
}

// readLeaf returns the first CERTIFICATE in a PEM file.
func readLeaf(path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, fmt.Errorf("%s: no CERTIFICATE block", path)
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return cert, nil
	}
}

// loadJWKS reads a JWKS file or fetches an https URL, trusting the system
// roots plus the certificates in caFile.
func loadJWKS(ctx context.Context, src, caFile string, timeout time.Duration) (*accesstoken.StaticKeySet, error) {
	if !strings.HasPrefix(src, "https://") {
		data, err := os.ReadFile(src)
		if err != nil {
			return nil, err
		}
		keys, err := accesstoken.ParseStaticKeySet(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", src, err)
		}
		return keys, nil
	}
	roots, err := x509.SystemCertPool()
	if err != nil {
		roots = x509.NewCertPool()
	}
	if caFile != "" {
		pemData, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		if !roots.AppendCertsFromPEM(pemData) {
			return nil, fmt.Errorf("%s: no certificates", caFile)
		}
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: roots}
	defer transport.CloseIdleConnections()
	client := &http.Client{
		Transport: transport,
		Timeout:   timeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if req.URL.Scheme != "https" || len(via) >= 5 {
				return errors.New("refusing a redirect to a non-https URL or after 5 redirects")
			}
			return nil
		},
	}
	return fetchJWKS(ctx, client, src)
}

// fetchJWKS gets and parses the JWKS at url.
func fetchJWKS(ctx context.Context, client *http.Client, url string) (*accesstoken.StaticKeySet, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetching the JWKS: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetching the JWKS: %s answered %s", url, resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("fetching the JWKS: %w", err)
	}
	keys, err := accesstoken.ParseStaticKeySet(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", url, err)
	}
	return keys, nil
}
