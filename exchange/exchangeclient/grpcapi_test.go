package exchangeclient_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/exchange/exchangeclient"
	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
	"github.com/spiffe-sts/spiffe-sts/internal/ststest"
)

func newGRPCClient(t testing.TB, issuerURL string, src exchangeclient.X509Source) *exchangeclient.Client {
	t.Helper()
	client, err := exchangeclient.New(context.Background(),
		exchangeclient.WithIssuerURL(issuerURL), exchangeclient.WithX509Source(src), exchangeclient.WithGRPC())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return client
}

// TestTokensOverGRPC checks that with WithGRPC each certificate's token
// requests go over a gRPC connection presenting that certificate: after a
// rotation the token is re-bound (or obtained again) for the new one.
func TestTokensOverGRPC(t *testing.T) {
	s := ststest.Start(t, nil)
	ctx := context.Background()
	verifier := s.Verifier(ststest.APIAudience)
	for _, tt := range rotationCases {
		t.Run(tt.name, func(t *testing.T) {
			oldSVID := s.CA.SVID(t, ststest.WorkloadID, time.Hour)
			oldLeaf := oldSVID.Certificates[0]
			src := newRotatingSource(s.CA.Bundle(), oldSVID)
			var rec recorder
			tokens := newTokens(t, newGRPCClient(t, s.URL, src),
				exchangeclient.Request{Audience: []string{ststest.APIAudience}, Scope: []string{"read", "write"}},
				exchangeclient.WithEvents(rec.record))
			oldTok, err := tokens.Token(ctx, oldLeaf)
			if err != nil {
				t.Fatalf("Token: %v", err)
			}
			if _, err := verifier.Verify(ctx, oldTok, oldLeaf); err != nil {
				t.Fatalf("Verify: %v", err)
			}

			newSVID := s.CA.SVID(t, tt.newID, time.Hour)
			newLeaf := newSVID.Certificates[0]
			src.rotate(newSVID)
			rec.wait(t, 2*time.Second, "new certificate's token", kindFor(tt.expectKinds[len(tt.expectKinds)-1], newLeaf))
			var kinds []exchangeclient.EventKind
			for _, ev := range rec.all() {
				if ev.Thumbprint == accesstoken.Thumbprint(newLeaf) {
					kinds = append(kinds, ev.Kind)
				}
			}
			if len(kinds) != len(tt.expectKinds) {
				t.Fatalf("events for the new certificate = %v, want %v", kinds, tt.expectKinds)
			}
			for i := range kinds {
				if kinds[i] != tt.expectKinds[i] {
					t.Fatalf("events for the new certificate = %v, want %v", kinds, tt.expectKinds)
				}
			}

			newTok, err := tokens.Token(ctx, newLeaf)
			if err != nil {
				t.Fatalf("Token(new certificate): %v", err)
			}
			claims, err := verifier.Verify(ctx, newTok, newLeaf)
			if err != nil {
				t.Fatalf("the new token does not verify bound to the new certificate: %v", err)
			}
			if claims.ClientID != tt.newID || claims.Scope != "read write" {
				t.Errorf("client_id, scope = %q, %q; want %q, %q", claims.ClientID, claims.Scope, tt.newID, "read write")
			}
			if _, err := verifier.Verify(ctx, newTok, oldLeaf); !errors.Is(err, accesstoken.ErrNotBound) {
				t.Errorf("new token with the old certificate: %v, want %v", err, accesstoken.ErrNotBound)
			}
			// The old certificate keeps its token.
			if tok, err := tokens.Token(ctx, oldLeaf); err != nil || tok != oldTok {
				t.Errorf("Token(old certificate) = %v; want the old token", err)
			}
		})
	}
}

// TestGRPCErrors checks that over gRPC a refusal is the same
// protocol.Error as over HTTP, and anything else is not one.
func TestGRPCErrors(t *testing.T) {
	s := ststest.Start(t, nil)
	ctx := context.Background()
	// An address nothing listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "https://" + ln.Addr().String()
	ln.Close()

	type config struct {
		issuerURL string
		req       exchangeclient.Request
		src       exchangeclient.X509Source
	}
	tests := []struct {
		name           string
		overrideConfig func(*config)
		// expectCode is the protocol.Error the error must equal; without
		// one the error must not be a protocol.Error.
		expectCode protocol.Error
	}{
		{
			name:           "audience not allowed",
			overrideConfig: func(c *config) { c.req.Audience = []string{"spiffe://example.org/db"} },
			expectCode:     protocol.ErrInvalidTarget.WithDescription(`audience "spiffe://example.org/db" is not allowed for this client`),
		},
		{
			name:           "no scope allowed",
			overrideConfig: func(c *config) { c.req.Scope = []string{"delete"} },
			expectCode:     protocol.ErrInvalidScope.WithDescription("none of the requested scopes is allowed for this client"),
		},
		{
			name:           "workload denied by policy",
			overrideConfig: func(c *config) { c.src = newSource(s, t, ststest.DeniedID) },
			expectCode:     protocol.ErrUnauthorizedClient.WithDescription("no policy rule allows " + ststest.DeniedID),
		},
		{
			name:           "JWT-SVID of another workload",
			overrideConfig: func(c *config) { c.req.SubjectToken = s.JWTSVID(t, ststest.OtherID) },
			expectCode:     protocol.ErrInvalidGrant.WithDescription("the subject token was neither issued nor sent to this client"),
		},
		{
			name:           "STS unreachable",
			overrideConfig: func(c *config) { c.issuerURL = down },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := config{
				issuerURL: s.URL,
				req:       exchangeclient.Request{Audience: []string{ststest.APIAudience}},
				src:       newSource(s, t, ststest.WorkloadID),
			}
			if tt.overrideConfig != nil {
				tt.overrideConfig(&cfg)
			}
			client := newGRPCClient(t, cfg.issuerURL, cfg.src)
			_, exchangeErr := client.Exchange(ctx, cfg.req)
			tokens, tokensErr := client.NewTokens(ctx, cfg.req)
			if tokensErr == nil {
				tokens.Close()
			}
			for what, err := range map[string]error{"Exchange": exchangeErr, "NewTokens": tokensErr} {
				var oauthErr protocol.Error
				isOAuth := errors.As(err, &oauthErr)
				switch {
				case err == nil:
					t.Errorf("%s succeeded", what)
				case tt.expectCode.Code == "" && isOAuth:
					t.Errorf("%s error = %v, a protocol.Error; want a local error", what, err)
				case tt.expectCode.Code != "" && (!isOAuth || oauthErr != tt.expectCode || !errors.Is(err, protocol.Error{Code: tt.expectCode.Code})):
					t.Errorf("%s error = %v, want %v", what, err, tt.expectCode)
				}
			}
		})
	}
}

func TestGRPCClientClosed(t *testing.T) {
	s := ststest.Start(t, nil)
	client := newGRPCClient(t, s.URL, newSource(s, t, ststest.WorkloadID))
	req := exchangeclient.Request{Audience: []string{ststest.APIAudience}}
	if _, err := client.Exchange(context.Background(), req); err != nil {
		t.Fatalf("Exchange: %v", err)
	}
	if err := client.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := client.Exchange(context.Background(), req); err == nil || err.Error() != "exchangeclient: client is closed" {
		t.Errorf("Exchange after Close = %v, want exchangeclient: client is closed", err)
	}
}
