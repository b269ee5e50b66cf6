package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/exchange/exchangeclient"
	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
)

const exchangeHelp = `Gets an access token for this workload from the STS. The workload's
X509-SVID comes from the Workload API at -socket or SPIFFE_ENDPOINT_SOCKET
and authenticates the request over mTLS; the token is bound to it.

With -grant jwt-svid (the default) the request is an RFC 8693 token
exchange of the workload's JWT-SVID, fetched with the -sts URL as its
audience, or of the token in -subject-token-file. With -grant
client-credentials the X509-SVID alone authenticates the request.

-output token prints the raw token and nothing else; json prints the token
response; claims prints the decoded header and claims (as 'stsctl inspect').
-verify fetches the STS's JWKS over the same mTLS trust and verifies the
token's signature, claims and binding to this workload's certificate,
printing what it checked; the token is printed only if it verifies.
`

// Values of -grant and -output.
const (
	grantJWTSVID           = "jwt-svid"
	grantClientCredentials = "client-credentials"
	outputToken            = "token"
	outputJSON             = "json"
	outputClaims           = "claims"
)

// exchangeFlags is the parsed command line of the exchange command.
type exchangeFlags struct {
	stsURL           string
	stsID            spiffeid.ID
	socket           string
	audiences        []string
	resources        []string
	scope            []string
	grant            string
	subjectTokenFile string
	subjectTokenType protocol.TokenType
	output           string
	verify           bool
	impersonate      bool
	timeout          time.Duration
}

// parseExchangeFlags parses and checks the command line. ok is false when
// the command should exit with code.
func parseExchangeFlags(args []string, stderr io.Writer) (f exchangeFlags, code int, ok bool) {
	fs := newFlagSet("exchange", "-sts URL -audience A [flags]", exchangeHelp, stderr)
	stsURL := fs.String("sts", "", "STS issuer `URL`, e.g. https://sts.example.org:8443 (required)")
	stsID := fs.String("sts-id", "", "authorize exactly this STS `SPIFFE ID` (default: any ID in the workload's trust domain)")
	fs.StringVar(&f.socket, "socket", "", "Workload API `address`, e.g. unix:///run/spire/agent.sock (default: $SPIFFE_ENDPOINT_SOCKET)")
	var audiences, resources stringList
	fs.Var(&audiences, "audience", "`audience` of the token; repeat for more (an -audience or -resource is required)")
	fs.Var(&resources, "resource", "resource `URI` of the token (RFC 8707); repeat for more")
	scope := fs.String("scope", "", "requested scopes, space-separated, e.g. \"read write\"")
	fs.StringVar(&f.grant, "grant", grantJWTSVID, "`grant`: jwt-svid (token exchange) or client-credentials")
	fs.StringVar(&f.subjectTokenFile, "subject-token-file", "", "exchange the token in this `file` (\"-\" for stdin) instead of a JWT-SVID")
	subjectTokenType := fs.String("subject-token-type", "", "`type` of -subject-token-file: jwt (default), access_token or an RFC 8693 URN")
	fs.StringVar(&f.output, "output", outputToken, "output `format`: token, json or claims")
	fs.BoolVar(&f.impersonate, "impersonate", false, "ask for a token for the subject without act (impersonation), where policy allows it")
	fs.BoolVar(&f.verify, "verify", false, "verify the issued token with the STS's JWKS and this workload's certificate")
	fs.DurationVar(&f.timeout, "timeout", 30*time.Second, "time limit for the whole command")
	positional, code, ok := parseArgs(fs, args)
	if !ok {
		return f, code, false
	}
	fail := func(format string, args ...any) (exchangeFlags, int, bool) {
		return f, usageError(stderr, "exchange", format, args...), false
	}
	f.stsURL = *stsURL
	var err error
	if f.stsID, err = checkSTSArgs(positional, f.stsURL, *stsID); err != nil {
		return fail("%v", err)
	}
	f.audiences, f.resources, f.scope = audiences, resources, strings.Fields(*scope)
	if len(f.audiences)+len(f.resources) == 0 {
		return fail("-audience or -resource is required")
	}
	switch f.grant {
	case grantJWTSVID:
	case grantClientCredentials:
		if f.subjectTokenFile != "" {
			return fail("-subject-token-file does not apply to -grant client-credentials")
		}
	default:
		return fail("-grant must be %s or %s", grantJWTSVID, grantClientCredentials)
	}
	if *subjectTokenType != "" {
		if f.subjectTokenFile == "" {
			return fail("-subject-token-type needs -subject-token-file")
		}
		typ, err := parseTokenType(*subjectTokenType)
		if err != nil {
			return fail("-subject-token-type: %v", err)
		}
		f.subjectTokenType = typ
	}
	switch f.output {
	case outputToken, outputJSON, outputClaims:
	default:
		return fail("-output must be %s, %s or %s", outputToken, outputJSON, outputClaims)
	}
	if f.timeout <= 0 {
		return fail("-timeout must be positive")
	}
	return f, exitOK, true
}

// checkSTSArgs checks what bench and exchange share: no positional
// arguments, -sts by the issuer URL rule of the server
// (protocol.CheckIssuerURL), and -sts-id, a SPIFFE ID or empty for any ID
// in the workload's trust domain. The errors are the usage messages.
func checkSTSArgs(positional []string, stsURL, stsID string) (spiffeid.ID, error) {
	if len(positional) > 0 {
		return spiffeid.ID{}, fmt.Errorf("unexpected argument %q", positional[0])
	}
	if err := protocol.CheckIssuerURL(stsURL); err != nil {
		return spiffeid.ID{}, fmt.Errorf("-sts %v (the STS issuer URL, https://host[:port])", err)
	}
	if stsID == "" {
		return spiffeid.ID{}, nil
	}
	id, err := spiffeid.FromString(stsID)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("-sts-id: %v", err)
	}
	return id, nil
}

// parseTokenType accepts the short names jwt and access_token or a URN.
func parseTokenType(s string) (protocol.TokenType, error) {
	switch s {
	case "jwt":
		return protocol.TokenTypeJWT, nil
	case "access_token":
		return protocol.TokenTypeAccessToken, nil
	}
	return protocol.ParseTokenType(s)
}

func runExchange(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	f, code, ok := parseExchangeFlags(args, stderr)
	if !ok {
		return code
	}
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()

	var subjectToken string
	if f.subjectTokenFile != "" {
		tok, err := readTokenFile(f.subjectTokenFile, stdin)
		if err != nil {
			fmt.Fprintf(stderr, "stsctl exchange: subject token: %v\n", err)
			return exitEnv
		}
		subjectToken = tok
	}

	var wlOpts []workloadapi.ClientOption
	if f.socket != "" {
		wlOpts = append(wlOpts, workloadapi.WithAddr(f.socket))
	}
	wl, err := workloadapi.New(ctx, wlOpts...)
	if err != nil {
		fmt.Fprintf(stderr, "stsctl exchange: Workload API: %v (set -socket or SPIFFE_ENDPOINT_SOCKET)\n", err)
		return exitEnv
	}
	defer wl.Close()
	source, err := workloadapi.NewX509Source(ctx, workloadapi.WithClient(wl))
	if err != nil {
		fmt.Fprintf(stderr, "stsctl exchange: X509-SVID from the Workload API: %v\n", err)
		return exitEnv
	}
	defer source.Close()
	if f.grant == grantJWTSVID && subjectToken == "" {
		svid, err := wl.FetchJWTSVID(ctx, jwtsvid.Params{Audience: f.stsURL})
		if err != nil {
			fmt.Fprintf(stderr, "stsctl exchange: JWT-SVID from the Workload API: %v\n", err)
			return exitEnv
		}
		subjectToken = svid.Marshal()
	}
	return exchangeWithSource(ctx, &f, source, subjectToken, stdout, stderr)
}

// exchangeWithSource is the exchange command once the workload's SVIDs are
// at hand: it runs the exchange, verifies the token if asked, and prints
// it. subjectToken is ignored for -grant client-credentials.
func exchangeWithSource(ctx context.Context, f *exchangeFlags, source exchangeclient.X509Source, subjectToken string, stdout, stderr io.Writer) int {
	opts := []exchangeclient.Option{
		exchangeclient.WithIssuerURL(f.stsURL),
		exchangeclient.WithX509Source(source),
		exchangeclient.WithTimeout(f.timeout),
	}
	if !f.stsID.IsZero() {
		opts = append(opts, exchangeclient.WithServerID(f.stsID))
	}
	client, err := exchangeclient.New(ctx, opts...)
	if err != nil {
		fmt.Fprintf(stderr, "stsctl exchange: %v\n", err)
		return exitEnv
	}
	defer client.Close()

	req := exchangeclient.Request{Audience: f.audiences, Resource: f.resources, Scope: f.scope, Impersonate: f.impersonate}
	if f.grant == grantJWTSVID {
		req.SubjectToken, req.SubjectTokenType = subjectToken, f.subjectTokenType
	}
	tok, err := client.Exchange(ctx, req)
	if err != nil {
		var oauthErr protocol.Error
		if errors.As(err, &oauthErr) {
			fmt.Fprintf(stderr, "stsctl exchange: token refused: %s\n", strings.TrimPrefix(oauthErr.Error(), "exchange: "))
			return exitInvalid
		}
		fmt.Fprintf(stderr, "stsctl exchange: %v\n", err)
		return exitEnv
	}

	if f.verify {
		if code := verifyIssued(ctx, f, source, tok.AccessToken, stdout, stderr); code != exitOK {
			return code
		}
	}
	switch f.output {
	case outputJSON:
		return printTokenJSON(stdout, stderr, tok)
	case outputClaims:
		decoded, err := decodeToken(tok.AccessToken)
		if err != nil {
			fmt.Fprintf(stderr, "stsctl exchange: the issued token is malformed: %v\n", err)
			return exitInvalid
		}
		if !f.verify {
			fmt.Fprintln(stdout, "NOT VERIFIED: decoded only")
		}
		printDecoded(stdout, decoded, time.Now())
	default:
		fmt.Fprintln(stdout, tok.AccessToken)
	}
	return exitOK
}

// verifyIssued checks the issued token as a resource server of its
// audiences would, with the STS's published keys and this workload's
// certificate, and prints what it checked.
func verifyIssued(ctx context.Context, f *exchangeFlags, source exchangeclient.X509Source, token string, stdout, stderr io.Writer) int {
	svid, err := source.GetX509SVID()
	if err != nil {
		fmt.Fprintf(stderr, "stsctl exchange: no X509-SVID: %v\n", err)
		return exitEnv
	}
	leaf := svid.Certificates[0]
	transport := &http.Transport{
		Proxy:             http.ProxyFromEnvironment,
		TLSClientConfig:   tlsconfig.MTLSClientConfig(source, source, stsAuthorizer(source, f.stsID)),
		ForceAttemptHTTP2: true,
	}
	defer transport.CloseIdleConnections()
	jwksURL := f.stsURL + protocol.PathJWKS
	keys, err := fetchJWKS(ctx, &http.Client{Transport: transport, Timeout: f.timeout}, jwksURL)
	if err != nil {
		fmt.Fprintf(stderr, "stsctl exchange: %v\n", err)
		return exitEnv
	}
	audiences := append(append([]string(nil), f.audiences...), f.resources...)
	verifier := accesstoken.NewVerifier(f.stsURL, keys, &accesstoken.Config{Audiences: audiences})
	claims, err := verifier.Verify(ctx, token, leaf)
	if err != nil {
		reportInvalid(stderr, "exchange", err, token, leaf, "this workload's certificate")
		return exitInvalid
	}
	printVerified(stdout, token, claims, jwksURL, "this workload's certificate ("+svid.ID.String()+")")
	return exitOK
}

// stsAuthorizer authorizes the STS as exchangeclient does: exactly id, or
// any member of the workload's trust domain.
func stsAuthorizer(source x509svid.Source, id spiffeid.ID) tlsconfig.Authorizer {
	if !id.IsZero() {
		return tlsconfig.AuthorizeID(id)
	}
	return func(actual spiffeid.ID, chains [][]*x509.Certificate) error {
		svid, err := source.GetX509SVID()
		if err != nil {
			return err
		}
		return tlsconfig.AuthorizeMemberOf(svid.ID.TrustDomain())(actual, chains)
	}
}

// tokenJSON is the token response (RFC 8693 §2.2.1) as printed, with the
// absolute expiry added.
type tokenJSON struct {
	AccessToken     string             `json:"access_token"`
	IssuedTokenType protocol.TokenType `json:"issued_token_type,omitempty"`
	TokenType       string             `json:"token_type"`
	ExpiresIn       int64              `json:"expires_in"`
	Scope           string             `json:"scope,omitempty"`
	Expiry          string             `json:"expiry"`
}

func printTokenJSON(stdout, stderr io.Writer, tok *exchangeclient.Token) int {
	out, err := json.MarshalIndent(tokenJSON{
		AccessToken:     tok.AccessToken,
		IssuedTokenType: tok.IssuedTokenType,
		TokenType:       tok.TokenType,
		ExpiresIn:       int64(math.Round(time.Until(tok.Expiry).Seconds())),
		Scope:           strings.Join(tok.Scope, " "),
		Expiry:          formatTime(tok.Expiry),
	}, "", "  ")
	if err != nil {
		fmt.Fprintf(stderr, "stsctl exchange: %v\n", err)
		return exitEnv
	}
	fmt.Fprintf(stdout, "%s\n", out)
	return exitOK
}
