package protocol_test

import (
	"errors"
	"fmt"

	"google.golang.org/grpc/status"

	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
)

// Every entry point applies the same issuer URL rule.
func ExampleCheckIssuerURL() {
	for _, raw := range []string{
		"https://sts.example.org:8443",
		"https://sts.example.org:8443/",
		"https://sts.example.org/tenant",
		"http://sts.example.org",
	} {
		fmt.Printf("%s: %v\n", raw, protocol.CheckIssuerURL(raw))
	}
	// Output:
	// https://sts.example.org:8443: <nil>
	// https://sts.example.org:8443/: must not end in a slash
	// https://sts.example.org/tenant: must not have a path
	// http://sts.example.org: must be an https URL
}

// A refusal crosses gRPC as a status and comes back as the same Error.
func ExampleErrorFromStatus() {
	refusal := protocol.ErrInvalidTarget.WithDescription(`audience "spiffe://example.org/db" is not allowed for this client`)
	st := status.Convert(refusal) // what the server sends
	fmt.Println(st.Code(), st.Message())

	back, ok := protocol.ErrorFromStatus(st) // what the client gets
	fmt.Println(ok, errors.Is(back, protocol.ErrInvalidTarget), back.HTTPStatus())
	// Output:
	// InvalidArgument invalid_target: audience "spiffe://example.org/db" is not allowed for this client
	// true true 400
}
