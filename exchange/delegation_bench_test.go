package exchange_test

import (
	"context"
	"net/url"
	"testing"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/exchange"
	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
	"github.com/spiffe-sts/spiffe-sts/internal/ststest"
)

// BenchmarkDelegatedExchange measures one delegated exchange on the
// server: orders presents a token the frontend obtained for it (sub a SPIFFE
// ID, act the frontend) and gets one for payments with the nested act
// chain. The subject token's signature is checked on every call (no cache
// for access tokens) and the new token is signed: one ES256 verify and one
// ES256 sign per call.
func BenchmarkDelegatedExchange(b *testing.B) {
	s := ststest.Start(b, func(c *exchange.Config) { c.Policy = delegationPolicyTB(b) })
	frontendLeaf := s.WorkloadSVID(b, frontendID).Certificates[0]
	subject := accesstoken.Claims{Subject: frontendID, ClientID: frontendID, Audience: accesstoken.Audience{ordersID},
		Scope: "read write", Actor: &accesstoken.Actor{Subject: frontendID}}
	raw, err := s.Issuer.Mint(context.Background(), &subject, frontendLeaf, 0)
	if err != nil {
		b.Fatal(err)
	}
	body := url.Values{"grant_type": {string(protocol.GrantTypeTokenExchange)}, "subject_token": {raw},
		"subject_token_type": {string(protocol.TokenTypeAccessToken)}, "audience": {paymentsID}}.Encode()
	r := newRequester(b, newKeepAliveConn(b, s, ordersID), body)
	b.ReportAllocs()
	for b.Loop() {
		r.serve(b)
	}
}
