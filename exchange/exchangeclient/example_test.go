package exchangeclient_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/spiffe-sts/spiffe-sts/exchange/exchangeclient"
	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
)

// This example exchanges the workload's JWT-SVID for an access token to call
// an API. It needs a Workload API at SPIFFE_ENDPOINT_SOCKET and a running
// STS, so it has no output to check.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const issuerURL = "https://sts.example.org:8443"

	wl, err := workloadapi.New(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	defer wl.Close()
	source, err := workloadapi.NewX509Source(ctx, workloadapi.WithClient(wl))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	defer source.Close()
	jwt, err := wl.FetchJWTSVID(ctx, jwtsvid.Params{Audience: issuerURL})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}

	client, err := exchangeclient.New(ctx,
		exchangeclient.WithIssuerURL(issuerURL),
		exchangeclient.WithX509Source(source),
		exchangeclient.WithServerID(spiffeid.RequireFromString("spiffe://example.org/sts")),
	)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	defer client.Close()

	tok, err := client.Exchange(ctx, exchangeclient.Request{
		SubjectToken: jwt.Marshal(),
		Audience:     []string{"spiffe://example.org/api"},
		Scope:        []string{"read"},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://api.example.org/orders", nil)
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	// Send req over mTLS with the same source: the token is bound to it.
}

// This example shows how a caller tells the server's refusals, which are
// protocol.Error values, from failures to reach it.
func ExampleClient_Exchange_errors() {
	explain := func(err error) string {
		var oauthErr protocol.Error
		if !errors.As(err, &oauthErr) {
			return "STS unreachable; retry later"
		}
		switch {
		case errors.Is(err, protocol.ErrInvalidTarget):
			return "audience not allowed: " + oauthErr.Description
		case errors.Is(err, protocol.ErrInvalidGrant):
			return "subject token refused; fetch a fresh JWT-SVID"
		default:
			return "refused: " + oauthErr.Code
		}
	}
	// What Exchange returns in each case:
	fmt.Println(explain(protocol.ErrInvalidTarget.WithDescription(`audience "spiffe://example.org/db" is not allowed for this client`)))
	fmt.Println(explain(protocol.ErrInvalidGrant.WithDescription("the JWT-SVID has expired")))
	fmt.Println(explain(protocol.ErrUnauthorizedClient))
	fmt.Println(explain(fmt.Errorf("exchangeclient: token request: %w", context.DeadlineExceeded)))
	// Output:
	// audience not allowed: audience "spiffe://example.org/db" is not allowed for this client
	// subject token refused; fetch a fresh JWT-SVID
	// refused: unauthorized_client
	// STS unreachable; retry later
}

// New checks its options before it connects to anything.
func ExampleNew() {
	_, err := exchangeclient.New(context.Background(), exchangeclient.WithIssuerURL("http://sts.example.org"))
	fmt.Println(err)
	// Output:
	// exchangeclient: issuer URL "http://sts.example.org" must be an https URL
}

// This example calls a gRPC service with tokens bound to the certificate of
// each connection, kept fresh across SVID rotations. It needs a Workload
// API, an STS and the service, so it has no output to check.
func ExampleTokens_PerRPCCredentials() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client, err := exchangeclient.New(ctx, exchangeclient.WithIssuerURL("https://sts.example.org:8443"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	defer client.Close()

	// client_credentials: a token for the workload's own SPIFFE ID.
	tokens, err := client.NewTokens(ctx, exchangeclient.Request{
		Audience: []string{"spiffe://example.org/api"},
		Scope:    []string{"read"},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err) // a protocol.Error when the STS refused
		return
	}
	defer tokens.Close()

	api := spiffeid.RequireFromString("spiffe://example.org/api")
	conn, err := grpc.NewClient("api.example.org:443",
		grpc.WithTransportCredentials(tokens.TransportCredentials(tlsconfig.AuthorizeID(api))),
		grpc.WithPerRPCCredentials(tokens.PerRPCCredentials()),
	)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	defer conn.Close()
	_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	fmt.Println(err)
}

// This example calls an HTTPS API with tokens bound to the certificate of
// each connection. It needs a Workload API, an STS and the API, so it has
// no output to check.
func ExampleTokens_RoundTripper() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client, err := exchangeclient.New(ctx, exchangeclient.WithIssuerURL("https://sts.example.org:8443"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	defer client.Close()
	tokens, err := client.NewTokens(ctx, exchangeclient.Request{Resource: []string{"https://api.example.org/orders"}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	defer tokens.Close()

	api := spiffeid.RequireFromString("spiffe://example.org/api")
	hc := &http.Client{Transport: tokens.RoundTripper(tlsconfig.AuthorizeID(api)), Timeout: 10 * time.Second}
	resp, err := hc.Get("https://api.example.org/orders")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	defer resp.Body.Close()
	fmt.Println(resp.Status)
}

// This example turns Events into log lines; events never carry a token.
func ExampleWithEvents() {
	logEvent := func(ev exchangeclient.Event) {
		switch ev.Kind {
		case exchangeclient.EventFailed:
			var oauthErr protocol.Error
			if errors.As(ev.Err, &oauthErr) {
				fmt.Printf("%s x5t#S256=%s error=%s\n", ev.Kind, ev.Thumbprint, oauthErr.Code)
			} else {
				fmt.Printf("%s x5t#S256=%s error=%v\n", ev.Kind, ev.Thumbprint, ev.Err)
			}
		default:
			fmt.Printf("%s x5t#S256=%s latency=%v blocking=%t\n", ev.Kind, ev.Thumbprint, ev.Latency, ev.Blocking)
		}
	}
	// Pass it with exchangeclient.WithEvents(logEvent). What it prints:
	logEvent(exchangeclient.Event{Kind: exchangeclient.EventRebound, Thumbprint: "2y4Nd...", Latency: 12 * time.Millisecond})
	logEvent(exchangeclient.Event{Kind: exchangeclient.EventFailed, Thumbprint: "2y4Nd...", Err: fmt.Errorf("exchangeclient: re-binding the token: %w", protocol.ErrInvalidGrant)})
	// Output:
	// rebound x5t#S256=2y4Nd... latency=12ms blocking=false
	// failed x5t#S256=2y4Nd... error=invalid_grant
}

// This example calls a gRPC API through an egress sidecar that holds the
// workload's X509-SVID (WithSidecar): h2c to the sidecar on a Unix socket,
// a re-binding and one more try when the sidecar's SVID has rotated. It
// needs the sidecar and a running STS, so it has no output to check.
func ExampleTokens_GRPCDialOptions() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client, err := exchangeclient.New(ctx, exchangeclient.WithIssuerURL("https://sts.example.org:8443"),
		exchangeclient.WithSidecar("unix:///run/egress/sidecar.sock"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	defer client.Close()
	tokens, err := client.NewTokens(ctx, exchangeclient.Request{Audience: []string{"spiffe://example.org/api"}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	defer tokens.Close()

	// The target names the destination (:authority); the connection goes
	// to the sidecar.
	conn, err := grpc.NewClient("api.example.org:443", tokens.GRPCDialOptions(nil)...)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	defer conn.Close()
	_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	fmt.Println(err)
}
