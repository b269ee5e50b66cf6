package exchangeclient_test

import (
	"context"
	"crypto/x509"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/exchange"
	"github.com/spiffe-sts/spiffe-sts/exchange/exchangeclient"
	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
	"github.com/spiffe-sts/spiffe-sts/internal/ststest"
	stsid "github.com/spiffe-sts/spiffe-sts/spiffeid"
)

// rotatingSource is an exchangeclient.X509Source whose SVID the test
// swaps, announcing each swap on Updated like a workloadapi.X509Source.
type rotatingSource struct {
	bundle  *spiffebundle.Bundle
	updated chan struct{}

	mu   sync.RWMutex
	svid *x509svid.SVID
}

func newRotatingSource(bundle *spiffebundle.Bundle, svid *x509svid.SVID) *rotatingSource {
	return &rotatingSource{bundle: bundle, svid: svid, updated: make(chan struct{}, 1)}
}

func (s *rotatingSource) GetX509SVID() (*x509svid.SVID, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.svid, nil
}

func (s *rotatingSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return s.bundle.GetX509BundleForTrustDomain(td)
}

func (s *rotatingSource) Updated() <-chan struct{} { return s.updated }

// rotate installs svid, as the Workload API does at an SVID's half-life.
func (s *rotatingSource) rotate(svid *x509svid.SVID) {
	s.mu.Lock()
	s.svid = svid
	s.mu.Unlock()
	select {
	case s.updated <- struct{}{}:
	default:
	}
}

func (s *rotatingSource) leaf() *x509.Certificate {
	svid, _ := s.GetX509SVID()
	return svid.Certificates[0]
}

// recorder collects Events.
type recorder struct {
	mu     sync.Mutex
	events []exchangeclient.Event
}

func (r *recorder) record(ev exchangeclient.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
}

func (r *recorder) all() []exchangeclient.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// wait returns the first event matching match, failing the test after
// timeout.
func (r *recorder) wait(t *testing.T, timeout time.Duration, what string, match func(exchangeclient.Event) bool) exchangeclient.Event {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		for _, ev := range r.all() {
			if match(ev) {
				return ev
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s event within %v; events: %+v", what, timeout, r.all())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func kindFor(kind exchangeclient.EventKind, leaf *x509.Certificate) func(exchangeclient.Event) bool {
	thumb := accesstoken.Thumbprint(leaf)
	return func(ev exchangeclient.Event) bool { return ev.Kind == kind && ev.Thumbprint == thumb }
}

// policyWithTTL is ststest.DefaultPolicy with a different MaxTTL.
func policyWithTTL(t testing.TB, ttl time.Duration) func(*exchange.Config) {
	return func(c *exchange.Config) {
		policy, err := stsid.NewPolicy([]stsid.Rule{{
			Pattern:       stsid.RequirePattern("spiffe://example.org/ns/prod/sa/*"),
			Audiences:     []string{ststest.APIAudience, ststest.OrdersResource},
			Scopes:        []string{"read", "write", "admin"},
			DefaultScopes: []string{"read"},
			MaxTTL:        ttl,
		}})
		if err != nil {
			t.Fatal(err)
		}
		c.Policy = policy
	}
}

func newClient(t testing.TB, s *ststest.STS, src exchangeclient.X509Source) *exchangeclient.Client {
	t.Helper()
	client, err := exchangeclient.New(context.Background(), exchangeclient.WithIssuerURL(s.URL), exchangeclient.WithX509Source(src))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return client
}

func newTokens(t testing.TB, client *exchangeclient.Client, req exchangeclient.Request, opts ...exchangeclient.TokensOption) *exchangeclient.Tokens {
	t.Helper()
	tokens, err := client.NewTokens(context.Background(), req, opts...)
	if err != nil {
		t.Fatalf("NewTokens: %v", err)
	}
	t.Cleanup(func() { tokens.Close() })
	return tokens
}

func TestTokens(t *testing.T) {
	s := ststest.Start(t, nil)
	ctx := context.Background()
	tests := []struct {
		name           string
		overrideParams func(*exchangeclient.Request, *[]exchangeclient.TokensOption)
		expectScope    []string
	}{
		{
			name:        "client_credentials",
			expectScope: []string{"read"},
		},
		{
			name: "JWT-SVID",
			overrideParams: func(r *exchangeclient.Request, _ *[]exchangeclient.TokensOption) {
				r.SubjectToken = s.JWTSVID(t, ststest.WorkloadID)
			},
			expectScope: []string{"read"},
		},
		{
			name: "JWT-SVID from a function",
			overrideParams: func(_ *exchangeclient.Request, o *[]exchangeclient.TokensOption) {
				*o = append(*o, exchangeclient.WithSubjectTokenFunc(func(context.Context) (string, error) {
					return s.JWTSVID(t, ststest.WorkloadID), nil
				}))
			},
			expectScope: []string{"read"},
		},
		{
			name: "scopes",
			overrideParams: func(r *exchangeclient.Request, _ *[]exchangeclient.TokensOption) {
				r.Scope = []string{"read", "write"}
			},
			expectScope: []string{"read", "write"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := newRotatingSource(s.CA.Bundle(), s.WorkloadSVID(t, ststest.WorkloadID))
			var rec recorder
			req := exchangeclient.Request{Audience: []string{ststest.APIAudience}}
			opts := []exchangeclient.TokensOption{exchangeclient.WithEvents(rec.record)}
			if tt.overrideParams != nil {
				tt.overrideParams(&req, &opts)
			}
			tokens := newTokens(t, newClient(t, s, src), req, opts...)

			// The first token is held when NewTokens returns.
			start := time.Now()
			tok, err := tokens.Token(ctx, src.leaf())
			if err != nil {
				t.Fatalf("Token: %v", err)
			}
			if d := time.Since(start); d > 50*time.Millisecond {
				t.Errorf("Token took %v; the first token should have been held", d)
			}
			ev := rec.wait(t, time.Second, "obtained", kindFor(exchangeclient.EventObtained, src.leaf()))
			if ev.Blocking || ev.Expiry.IsZero() || ev.Err != nil {
				t.Errorf("obtained event = %+v", ev)
			}
			claims, err := s.Verifier(ststest.APIAudience).Verify(ctx, tok, src.leaf())
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if !slices.Equal(claims.Scopes(), tt.expectScope) {
				t.Errorf("scope = %q, want %q", claims.Scopes(), tt.expectScope)
			}
			other := s.CA.SVID(t, ststest.WorkloadID, time.Hour).Certificates[0]
			if _, err := s.Verifier(ststest.APIAudience).Verify(ctx, tok, other); !errors.Is(err, accesstoken.ErrNotBound) {
				t.Errorf("Verify with another certificate: %v, want %v", err, accesstoken.ErrNotBound)
			}
			// A certificate the workload never held gets no token.
			if _, err := tokens.Token(ctx, other); !errors.Is(err, exchangeclient.ErrUnknownCertificate) {
				t.Errorf("Token(unknown certificate) error = %v, want %v", err, exchangeclient.ErrUnknownCertificate)
			}
			// The same certificate parsed again is found by content.
			again, err := x509.ParseCertificate(src.leaf().Raw)
			if err != nil {
				t.Fatal(err)
			}
			if tok2, err := tokens.Token(ctx, again); err != nil || tok2 != tok {
				t.Errorf("Token(same certificate, another pointer) = %v; want the same token", err)
			}

			if err := tokens.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if _, err := tokens.Token(ctx, src.leaf()); !errors.Is(err, exchangeclient.ErrTokensClosed) {
				t.Errorf("Token after Close: %v, want %v", err, exchangeclient.ErrTokensClosed)
			}
		})
	}
}

// TestTokensRefresh checks that tokens are replaced in the background
// before they expire, so that Token never waits.
func TestTokensRefresh(t *testing.T) {
	t.Parallel()
	const ttl = 3 * time.Second
	s := ststest.Start(t, policyWithTTL(t, ttl))
	ctx := context.Background()
	src := newRotatingSource(s.CA.Bundle(), s.WorkloadSVID(t, ststest.WorkloadID))
	var rec recorder
	tokens := newTokens(t, newClient(t, s, src), exchangeclient.Request{Audience: []string{ststest.APIAudience}},
		exchangeclient.WithEvents(rec.record))
	verifier := s.Verifier(ststest.APIAudience)

	type seenToken struct {
		raw    string
		claims *accesstoken.Claims
		at     time.Time
	}
	var seen []seenToken
	var slowest time.Duration
	for end := time.Now().Add(2*ttl + ttl/2); time.Now().Before(end); time.Sleep(2 * time.Millisecond) {
		start := time.Now()
		tok, err := tokens.Token(ctx, src.leaf())
		slowest = max(slowest, time.Since(start))
		if err != nil {
			t.Fatalf("Token: %v", err)
		}
		if len(seen) > 0 && seen[len(seen)-1].raw == tok {
			continue
		}
		claims, err := verifier.Verify(ctx, tok, src.leaf())
		if err != nil {
			t.Fatalf("a token Token returned does not verify: %v", err)
		}
		seen = append(seen, seenToken{raw: tok, claims: claims, at: time.Now()})
	}

	if len(seen) < 3 {
		t.Fatalf("saw %d tokens in %v of %v tokens, want at least 3", len(seen), 2*ttl+ttl/2, ttl)
	}
	for i := 1; i < len(seen); i++ {
		// The replacement was held before its predecessor expired.
		if prevExp := time.Unix(seen[i-1].claims.Expiry, 0); !seen[i].at.Before(prevExp) {
			t.Errorf("token %d appeared at %v, after token %d expired at %v", i, seen[i].at, i-1, prevExp)
		}
	}
	for _, ev := range rec.all() {
		if ev.Blocking || ev.Kind == exchangeclient.EventFailed {
			t.Errorf("event %+v: no request should fail or be waited for", ev)
		}
	}
	if n := countKind(rec.all(), exchangeclient.EventRefreshed); n < 2 {
		t.Errorf("%d refreshed events, want at least 2", n)
	}
	// Token never waited on a request (no Blocking event above): it
	// answers from memory. The bound is loose for -race on a shared
	// machine.
	if slowest > 50*time.Millisecond {
		t.Errorf("slowest Token call took %v", slowest)
	}
	t.Logf("%d tokens, slowest Token call %v", len(seen), slowest)
}

func countKind(events []exchangeclient.Event, kind exchangeclient.EventKind) int {
	n := 0
	for _, ev := range events {
		if ev.Kind == kind {
			n++
		}
	}
	return n
}

// rotationCases are the rotations to a new SVID that the rotation tests
// make, with the events each gives.
var rotationCases = []struct {
	name string
	// newID is the SPIFFE ID of the rotated SVID.
	newID string
	// expectKinds are the events for the new certificate, in order.
	expectKinds []exchangeclient.EventKind
}{
	{
		name:        "re-bound",
		newID:       ststest.WorkloadID,
		expectKinds: []exchangeclient.EventKind{exchangeclient.EventRebound},
	},
	{
		// The STS re-binds only for the client the token was issued
		// to, so a new SPIFFE ID falls back to the original grant.
		name:        "re-bind refused, original grant",
		newID:       ststest.OtherID,
		expectKinds: []exchangeclient.EventKind{exchangeclient.EventFailed, exchangeclient.EventObtained},
	},
}

func TestTokensRotation(t *testing.T) {
	t.Parallel()
	s := ststest.Start(t, nil)
	ctx := context.Background()
	verifier := s.Verifier(ststest.APIAudience)
	for _, tt := range rotationCases {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			// The first SVID expires soon, to see its token dropped.
			oldSVID := s.CA.SVIDValid(t, ststest.WorkloadID, time.Now().Add(-time.Minute), time.Now().Add(4*time.Second))
			oldLeaf := oldSVID.Certificates[0]
			src := newRotatingSource(s.CA.Bundle(), oldSVID)
			var rec recorder
			tokens := newTokens(t, newClient(t, s, src), exchangeclient.Request{Audience: []string{ststest.APIAudience}, Scope: []string{"read", "write"}},
				exchangeclient.WithEvents(rec.record))
			oldTok, err := tokens.Token(ctx, oldLeaf)
			if err != nil {
				t.Fatal(err)
			}
			oldClaims, err := verifier.Verify(ctx, oldTok, oldLeaf)
			if err != nil {
				t.Fatal(err)
			}

			newSVID := s.CA.SVID(t, tt.newID, time.Hour)
			newLeaf := newSVID.Certificates[0]
			src.rotate(newSVID)

			// The new certificate's token is obtained promptly, without a
			// caller asking for it.
			last := tt.expectKinds[len(tt.expectKinds)-1]
			ev := rec.wait(t, 2*time.Second, last.String(), kindFor(last, newLeaf))
			if ev.Latency > time.Second || ev.Blocking {
				t.Errorf("%v event = %+v; want it within a second of the rotation, waited for by nobody", last, ev)
			}
			var kinds []exchangeclient.EventKind
			for _, ev := range rec.all() {
				if ev.Thumbprint == accesstoken.Thumbprint(newLeaf) {
					kinds = append(kinds, ev.Kind)
				}
			}
			if !slices.Equal(kinds, tt.expectKinds) {
				t.Errorf("events for the new certificate = %v, want %v; %+v", kinds, tt.expectKinds, rec.all())
			}

			start := time.Now()
			newTok, err := tokens.Token(ctx, newLeaf)
			if err != nil {
				t.Fatalf("Token(new certificate): %v", err)
			}
			if d := time.Since(start); d > 50*time.Millisecond {
				t.Errorf("Token(new certificate) took %v; the token should have been held", d)
			}
			newClaims, err := verifier.Verify(ctx, newTok, newLeaf)
			if err != nil {
				t.Fatalf("the new token does not verify for the new certificate: %v", err)
			}
			if _, err := verifier.Verify(ctx, newTok, oldLeaf); !errors.Is(err, accesstoken.ErrNotBound) {
				t.Errorf("the new token with the old certificate: %v, want %v", err, accesstoken.ErrNotBound)
			}
			if newClaims.Subject != tt.newID || newClaims.Scope != oldClaims.Scope || !slices.Equal(newClaims.Audience, oldClaims.Audience) {
				t.Errorf("new token sub %q scope %q aud %q, want %s, %q, %q", newClaims.Subject, newClaims.Scope, newClaims.Audience, tt.newID, oldClaims.Scope, oldClaims.Audience)
			}
			if last == exchangeclient.EventRebound && newClaims.Expiry > oldClaims.Expiry {
				t.Errorf("re-bound token exp %d is after the original's %d", newClaims.Expiry, oldClaims.Expiry)
			}

			// Connections still using the old certificate keep its token.
			if tok, err := tokens.Token(ctx, oldLeaf); err != nil || tok != oldTok {
				t.Errorf("Token(old certificate) = %v; want the old token", err)
			}

			// At the old certificate's NotAfter its token is dropped.
			rec.wait(t, time.Until(oldLeaf.NotAfter)+2*time.Second, "dropped", kindFor(exchangeclient.EventDropped, oldLeaf))
			if _, err := tokens.Token(ctx, oldLeaf); !errors.Is(err, exchangeclient.ErrCertificateExpired) {
				t.Errorf("Token(old certificate) after NotAfter: %v, want %v", err, exchangeclient.ErrCertificateExpired)
			}
			tok, err := tokens.Token(ctx, newLeaf)
			if err != nil {
				t.Fatalf("Token(new certificate) after the old one expired: %v", err)
			}
			if _, err := verifier.Verify(ctx, tok, newLeaf); err != nil {
				t.Errorf("Verify: %v", err)
			}
		})
	}
}

func TestTokensErrors(t *testing.T) {
	s := ststest.Start(t, nil)
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name           string
		overrideParams func(*exchangeclient.Request, *exchangeclient.X509Source, *context.Context)
		// expectCode is the protocol.Error the error matches; expectErrIs a
		// local error it wraps; expectErr the exact text otherwise.
		expectCode  protocol.Error
		expectErrIs error
		expectErr   string
	}{
		{
			name: "audience not allowed",
			overrideParams: func(r *exchangeclient.Request, _ *exchangeclient.X509Source, _ *context.Context) {
				r.Audience = []string{"spiffe://example.org/db"}
			},
			expectCode: protocol.ErrInvalidTarget.WithDescription(`audience "spiffe://example.org/db" is not allowed for this client`),
		},
		{
			name: "workload denied by policy",
			overrideParams: func(_ *exchangeclient.Request, src *exchangeclient.X509Source, _ *context.Context) {
				*src = newSource(s, t, ststest.DeniedID)
			},
			expectCode: protocol.ErrUnauthorizedClient.WithDescription("no policy rule allows " + ststest.DeniedID),
		},
		{
			name: "JWT-SVID of another workload",
			overrideParams: func(r *exchangeclient.Request, _ *exchangeclient.X509Source, _ *context.Context) {
				r.SubjectToken = s.JWTSVID(t, ststest.OtherID)
			},
			expectCode: protocol.ErrInvalidGrant.WithDescription("the subject token was neither issued nor sent to this client"),
		},
		{
			name:           "context done",
			overrideParams: func(_ *exchangeclient.Request, _ *exchangeclient.X509Source, ctx *context.Context) { *ctx = canceled },
			expectErrIs:    context.Canceled,
		},
		{
			name: "subject token type without a subject token",
			overrideParams: func(r *exchangeclient.Request, _ *exchangeclient.X509Source, _ *context.Context) {
				r.SubjectTokenType = protocol.TokenTypeJWT
			},
			expectErr: "exchangeclient: SubjectTokenType is set without a SubjectToken",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := exchangeclient.Request{Audience: []string{ststest.APIAudience}}
			var src exchangeclient.X509Source = newSource(s, t, ststest.WorkloadID)
			ctx := context.Background()
			tt.overrideParams(&req, &src, &ctx)
			tokens, err := newClient(t, s, src).NewTokens(ctx, req)
			if err == nil {
				tokens.Close()
				t.Fatal("NewTokens succeeded")
			}
			switch {
			case tt.expectCode.Code != "":
				var oauthErr protocol.Error
				if !errors.As(err, &oauthErr) || oauthErr != tt.expectCode || !errors.Is(err, tt.expectCode) {
					t.Errorf("NewTokens error = %v, want %v", err, tt.expectCode)
				}
			case tt.expectErrIs != nil:
				if !errors.Is(err, tt.expectErrIs) {
					t.Errorf("NewTokens error = %v, want %v", err, tt.expectErrIs)
				}
			default:
				if err.Error() != tt.expectErr {
					t.Errorf("NewTokens error = %v, want %q", err, tt.expectErr)
				}
			}
		})
	}
}

// TestTokensRotationRefused checks that when the STS refuses the rotated
// SVID, callers get its OAuth error.
func TestTokensRotationRefused(t *testing.T) {
	s := ststest.Start(t, nil)
	src := newRotatingSource(s.CA.Bundle(), s.WorkloadSVID(t, ststest.WorkloadID))
	var rec recorder
	tokens := newTokens(t, newClient(t, s, src), exchangeclient.Request{Audience: []string{ststest.APIAudience}}, exchangeclient.WithEvents(rec.record))
	denied := s.CA.SVID(t, ststest.DeniedID, time.Hour)
	src.rotate(denied)
	ev := rec.wait(t, 2*time.Second, "failed", func(ev exchangeclient.Event) bool {
		return ev.Kind == exchangeclient.EventFailed && errors.Is(ev.Err, protocol.ErrUnauthorizedClient)
	})
	if ev.Thumbprint != accesstoken.Thumbprint(denied.Certificates[0]) {
		t.Errorf("failed event for %s, want the denied certificate", ev.Thumbprint)
	}
	_, err := tokens.Token(context.Background(), denied.Certificates[0])
	var oauthErr protocol.Error
	if !errors.As(err, &oauthErr) || oauthErr.Code != protocol.ErrUnauthorizedClient.Code {
		t.Fatalf("Token error = %v, want %v", err, protocol.ErrUnauthorizedClient)
	}
	if ev := rec.all()[len(rec.all())-1]; ev.Kind != exchangeclient.EventFailed || !ev.Blocking {
		t.Errorf("last event = %+v, want a failure a caller waited for", ev)
	}
}

// TestTokenAllocations checks that returning a kept token allocates
// nothing.
func TestTokenAllocations(t *testing.T) {
	s := ststest.Start(t, nil)
	src := newRotatingSource(s.CA.Bundle(), s.WorkloadSVID(t, ststest.WorkloadID))
	tokens := newTokens(t, newClient(t, s, src), exchangeclient.Request{Audience: []string{ststest.APIAudience}})
	ctx, leaf := context.Background(), src.leaf()
	allocs := testing.AllocsPerRun(1000, func() {
		if _, err := tokens.Token(ctx, leaf); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("Token allocates %v times per call, want 0", allocs)
	}
}
