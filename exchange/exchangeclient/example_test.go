package exchangeclient_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/spiffe-sts/spiffe-sts/exchange"
	"github.com/spiffe-sts/spiffe-sts/exchange/exchangeclient"
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
// exchange.Error values, from failures to reach it.
func ExampleClient_Exchange_errors() {
	explain := func(err error) string {
		var oauthErr exchange.Error
		if !errors.As(err, &oauthErr) {
			return "STS unreachable; retry later"
		}
		switch {
		case errors.Is(err, exchange.ErrInvalidTarget):
			return "audience not allowed: " + oauthErr.Description
		case errors.Is(err, exchange.ErrInvalidGrant):
			return "subject token refused; fetch a fresh JWT-SVID"
		default:
			return "refused: " + oauthErr.Code
		}
	}
	// What Exchange returns in each case:
	fmt.Println(explain(exchange.ErrInvalidTarget.WithDescription(`audience "spiffe://example.org/db" is not allowed for this client`)))
	fmt.Println(explain(exchange.ErrInvalidGrant.WithDescription("the JWT-SVID has expired")))
	fmt.Println(explain(exchange.ErrUnauthorizedClient))
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
	// exchangeclient: issuer URL "http://sts.example.org" must be an https URL without user info, query or fragment
}
