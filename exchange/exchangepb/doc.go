// Package exchangepb is the generated code of the spiffe-sts gRPC token
// exchange API, spiffests.exchange.v1.TokenExchange (exchange.proto). The
// exchange package serves it on the same mTLS listener as the HTTP token
// endpoint, with the same checks and errors; exchangeclient.WithGRPC uses
// it.
//
// Regenerate with `make proto`; the tool versions are in the Makefile.
//
// A refusal is a gRPC status carrying a google.rpc.ErrorInfo (domain
// "spiffe-sts", reason the OAuth error code, metadata error_description);
// protocol.ErrorFromStatus turns it back into a protocol.Error:
//
//	resp, err := exchangepb.NewTokenExchangeClient(conn).Exchange(ctx, &exchangepb.ExchangeRequest{
//		GrantType: "client_credentials",
//		Audience:  []string{"spiffe://example.org/api"},
//	})
//	if oauthErr, ok := protocol.ErrorFromStatus(status.Convert(err)); ok {
//		// oauthErr.Code is "invalid_target", for example.
//	}
package exchangepb
