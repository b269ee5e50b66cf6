package grpcauth_test

import (
	"context"
	"crypto/x509"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/accesstoken/grpcauth"
	"github.com/spiffe-sts/spiffe-sts/internal/forwardedtest"
	"github.com/spiffe-sts/spiffe-sts/internal/ststest"
)

const proxyID = "spiffe://example.org/ns/edge/sa/envoy"

// xfccFor is the element a proxy appends for the client certificate c.
func xfccFor(c *x509.Certificate) string { return forwardedtest.XFCC(proxyID, c) }

// TestInterceptorsWithTrustedProxies calls over a connection presenting
// Hop, with the certificate of Forward in x-forwarded-client-cert
// metadata, a token bound to BoundTo.
func TestInterceptorsWithTrustedProxies(t *testing.T) {
	s := ststest.Start(t, nil)
	client := s.WorkloadSVID(t, ststest.WorkloadID)
	proxy := s.WorkloadSVID(t, proxyID)
	thief := s.WorkloadSVID(t, ststest.OtherID)
	evil := s.Evil.SVID(t, "spiffe://evil.example/ns/prod/sa/web", time.Hour)
	policy := forwardedtest.Policy(t, s.CA.Bundle(), proxyID)
	v := s.Verifier(ststest.APIAudience)
	dial, _ := startServer(t, s, v, grpcauth.WithTrustedProxies(policy))

	type params struct {
		Hop, Forward, BoundTo *x509svid.SVID
		Metadata              func(md metadata.MD)
	}
	tests := []struct {
		name           string
		overrideParams func(*params)
		expectErr      string // status message; "" for success
	}{
		{name: "trusted proxy forwards the client's certificate"},
		{name: "binding checked against the forwarded certificate, not the proxy's",
			overrideParams: func(p *params) { p.BoundTo = proxy },
			expectErr:      "invalid token: the token is not bound to the client certificate"},
		{name: "untrusted hop with the header is never served as the hop",
			overrideParams: func(p *params) { p.Hop, p.BoundTo = thief, thief },
			expectErr:      "invalid token: a forwarded client certificate is accepted only from a trusted proxy"},
		{name: "header forged by a direct client",
			overrideParams: func(p *params) { p.Hop, p.Forward, p.BoundTo = client, thief, client },
			expectErr:      "invalid token: a forwarded client certificate is accepted only from a trusted proxy"},
		{name: "trusted proxy that forwarded nothing is not the client",
			overrideParams: func(p *params) { p.Forward, p.BoundTo = nil, proxy },
			expectErr:      "invalid token: the proxy forwarded no client certificate"},
		{name: "direct client without a header",
			overrideParams: func(p *params) { p.Hop, p.Forward = client, nil }},
		{name: "forwarded certificate of an untrusted trust domain",
			overrideParams: func(p *params) { p.Forward = evil },
			expectErr:      "invalid token: the forwarded client certificate is not a valid X509-SVID"},
		{name: "header sent twice",
			overrideParams: func(p *params) {
				p.Metadata = func(md metadata.MD) { md.Append("x-forwarded-client-cert", xfccFor(thief.Certificates[0])) }
			},
			expectErr: "invalid token: the forwarded client certificate header is invalid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := params{Hop: proxy, Forward: client, BoundTo: client}
			if tt.overrideParams != nil {
				tt.overrideParams(&p)
			}
			token := s.Mint(t, accesstoken.Claims{Subject: ststest.WorkloadID, ClientID: ststest.WorkloadID,
				Audience: accesstoken.Audience{ststest.APIAudience}}, p.BoundTo)
			md := metadata.Pairs("authorization", "Bearer "+token)
			if p.Forward != nil {
				md.Append("x-forwarded-client-cert", xfccFor(p.Forward.Certificates[0]))
			}
			if p.Metadata != nil {
				p.Metadata(md)
			}
			ctx := metadata.NewOutgoingContext(context.Background(), md)
			_, err := healthpb.NewHealthClient(dial(p.Hop)).Check(ctx, &healthpb.HealthCheckRequest{})
			if tt.expectErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if st := status.Convert(err); st.Code() != codes.Unauthenticated || st.Message() != tt.expectErr {
				t.Fatalf("got %v, want Unauthenticated %q", err, tt.expectErr)
			}
			checkRefusal(t, err)
		})
	}
}
