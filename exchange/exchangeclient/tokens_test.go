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
	"github.com/spiffe-sts/spiffe-sts/internal/fakeclock"
	"github.com/spiffe-sts/spiffe-sts/internal/ststest"
	"github.com/spiffe-sts/spiffe-sts/issuer"
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
	// changed is closed, and replaced, at each event; nil before the
	// first wait.
	changed chan struct{}
}

func (r *recorder) record(ev exchangeclient.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, ev)
	if r.changed != nil {
		close(r.changed)
		r.changed = nil
	}
}

// next returns the events so far and a channel closed at the next one.
func (r *recorder) next() ([]exchangeclient.Event, <-chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.changed == nil {
		r.changed = make(chan struct{})
	}
	return slices.Clone(r.events), r.changed
}

func (r *recorder) all() []exchangeclient.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

// wait returns the first event matching match, waking at each event; it
// fails the test when none has come after timeout, which only guards
// against a hung test: the events come from Tokens' goroutines, without
// the clock moving.
func (r *recorder) wait(t *testing.T, timeout time.Duration, what string, match func(exchangeclient.Event) bool) exchangeclient.Event {
	t.Helper()
	return r.waitN(t, timeout, what, 1, match)
}

// waitN returns the nth event matching match, like wait.
func (r *recorder) waitN(t *testing.T, timeout time.Duration, what string, n int, match func(exchangeclient.Event) bool) exchangeclient.Event {
	t.Helper()
	guard := time.NewTimer(timeout)
	defer guard.Stop()
	for {
		events, changed := r.next()
		seen := 0
		for _, ev := range events {
			if match(ev) {
				if seen++; seen == n {
					return ev
				}
			}
		}
		select {
		case <-changed:
		case <-guard.C:
			t.Fatalf("no %s event %d within %v; events: %+v", what, n, timeout, r.all())
		}
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

// startFakeTime runs an STS whose server and issuer read clk, with
// overrideConfig (when not nil) applied first, and returns it with a
// resource-server verifier for APIAudience that reads clk too. Tokens of
// the STS must be verified with that verifier, not s.Verifier.
func startFakeTime(t testing.TB, clk *fakeclock.Clock, overrideConfig func(*exchange.Config)) (*ststest.STS, *accesstoken.Verifier) {
	t.Helper()
	var iss *issuer.Issuer
	s := ststest.Start(t, func(c *exchange.Config) {
		if overrideConfig != nil {
			overrideConfig(c)
		}
		alg, err := issuer.ParseAlgorithm("ES256")
		if err != nil {
			t.Fatal(err)
		}
		signer, err := issuer.GenerateSigner(alg)
		if err != nil {
			t.Fatal(err)
		}
		keys, err := issuer.StaticKeys(signer)
		if err != nil {
			t.Fatal(err)
		}
		if iss, err = issuer.New(issuer.Config{IssuerURL: c.IssuerURL, Keys: keys, Clock: clk.Now}); err != nil {
			t.Fatal(err)
		}
		c.Minter, c.Keys, c.Clock = iss, iss.KeySet(), clk.Now
	})
	return s, accesstoken.NewVerifier(s.URL, iss.KeySet(), &accesstoken.Config{Audiences: []string{ststest.APIAudience}, Now: clk.Now})
}

func newClient(t testing.TB, s *ststest.STS, src exchangeclient.X509Source, opts ...exchangeclient.Option) *exchangeclient.Client {
	t.Helper()
	opts = append([]exchangeclient.Option{exchangeclient.WithIssuerURL(s.URL), exchangeclient.WithX509Source(src)}, opts...)
	client, err := exchangeclient.New(context.Background(), opts...)
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

			// The first token is held when NewTokens returns: Token sends
			// no request for it.
			tok, err := tokens.Token(ctx, src.leaf())
			if err != nil {
				t.Fatalf("Token: %v", err)
			}
			ev := rec.wait(t, 10*time.Second, "obtained", kindFor(exchangeclient.EventObtained, src.leaf()))
			if ev.Blocking || ev.Expiry.IsZero() || ev.Err != nil {
				t.Errorf("obtained event = %+v", ev)
			}
			if events := rec.all(); len(events) != 1 {
				t.Errorf("events %+v; want only the first token's", events)
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

// TestTokensRefresh checks, on a fake clock, that tokens are replaced in
// the background before they expire, so that Token never waits.
func TestTokensRefresh(t *testing.T) {
	t.Parallel()
	const ttl = time.Minute
	clk := fakeclock.New(time.Now())
	s, verifier := startFakeTime(t, clk, policyWithTTL(t, ttl))
	ctx := context.Background()
	src := newRotatingSource(s.CA.Bundle(), s.WorkloadSVID(t, ststest.WorkloadID))
	var rec recorder
	tokens := newTokens(t, newClient(t, s, src, exchangeclient.WithClock(clk)), exchangeclient.Request{Audience: []string{ststest.APIAudience}},
		exchangeclient.WithEvents(rec.record))

	tok, err := tokens.Token(ctx, src.leaf())
	if err != nil {
		t.Fatalf("Token: %v", err)
	}
	const refreshes = 3
	for i := range refreshes {
		claims, err := verifier.Verify(ctx, tok, src.leaf())
		if err != nil {
			t.Fatalf("token %d does not verify: %v", i, err)
		}
		// Before two thirds of its life nothing is requested.
		clk.Advance(ttl / 2)
		if again, err := tokens.Token(ctx, src.leaf()); err != nil || again != tok {
			t.Fatalf("Token at half the token's life = %v; want the same token", err)
		}
		if n := countKind(rec.all(), exchangeclient.EventRefreshed); n != i {
			t.Fatalf("%d refreshed events at half the life of token %d, want %d", n, i, i)
		}
		// Past two thirds the replacement comes without a caller asking.
		clk.Advance(ttl / 4)
		ev := rec.waitN(t, 10*time.Second, "refreshed", i+1, func(ev exchangeclient.Event) bool { return ev.Kind == exchangeclient.EventRefreshed })
		next, err := tokens.Token(ctx, src.leaf())
		if err != nil {
			t.Fatalf("Token: %v", err)
		}
		if next == tok {
			t.Fatalf("refresh %d: Token returns the old token after the refreshed event %+v", i, ev)
		}
		// The replacement was held before its predecessor expired.
		if prevExp := time.Unix(claims.Expiry, 0); !clk.Now().Before(prevExp) {
			t.Errorf("token %d appeared at %v, after token %d expired at %v", i+1, clk.Now(), i, prevExp)
		}
		tok = next
	}
	if _, err := verifier.Verify(ctx, tok, src.leaf()); err != nil {
		t.Fatalf("the last token does not verify: %v", err)
	}
	// Token never waited on a request: no request failed or was blocking.
	for _, ev := range rec.all() {
		if ev.Blocking || ev.Kind == exchangeclient.EventFailed {
			t.Errorf("event %+v: no request should fail or be waited for", ev)
		}
	}
	if n := countKind(rec.all(), exchangeclient.EventRefreshed); n != refreshes {
		t.Errorf("%d refreshed events, want %d", n, refreshes)
	}
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

// TestTokensRotation rotates the SVID on a fake clock: the new
// certificate's token is obtained without the clock moving, and the old
// one's is dropped when the clock reaches its NotAfter.
func TestTokensRotation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, tt := range rotationCases {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			clk := fakeclock.New(time.Now())
			s, verifier := startFakeTime(t, clk, nil)
			// The first SVID expires first, to see its token dropped.
			oldSVID := s.CA.SVIDValid(t, ststest.WorkloadID, clk.Now().Add(-time.Minute), clk.Now().Add(10*time.Minute))
			oldLeaf := oldSVID.Certificates[0]
			src := newRotatingSource(s.CA.Bundle(), oldSVID)
			var rec recorder
			tokens := newTokens(t, newClient(t, s, src, exchangeclient.WithClock(clk)), exchangeclient.Request{Audience: []string{ststest.APIAudience}, Scope: []string{"read", "write"}},
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

			// The new certificate's token is obtained at once (the clock
			// does not move: Tokens does not wait for a poll), without a
			// caller asking for it.
			last := tt.expectKinds[len(tt.expectKinds)-1]
			ev := rec.wait(t, 10*time.Second, last.String(), kindFor(last, newLeaf))
			if ev.Latency != 0 || ev.Blocking {
				t.Errorf("%v event = %+v; want it with no time passed since the rotation, waited for by nobody", last, ev)
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

			held := len(rec.all())
			newTok, err := tokens.Token(ctx, newLeaf)
			if err != nil {
				t.Fatalf("Token(new certificate): %v", err)
			}
			if events := rec.all(); len(events) != held {
				t.Errorf("Token(new certificate) sent a request (events %+v); the token should have been held", events[held:])
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

			// Until the old certificate's NotAfter it gets tokens (the
			// first has expired by now); at it, its token is dropped.
			clk.Advance(oldLeaf.NotAfter.Sub(clk.Now()) - time.Minute)
			if tok, err := tokens.Token(ctx, oldLeaf); err != nil {
				t.Errorf("Token(old certificate) a minute before its NotAfter: %v", err)
			} else if _, err := verifier.Verify(ctx, tok, oldLeaf); err != nil {
				t.Errorf("the old certificate's token a minute before its NotAfter: %v", err)
			}
			if n := countKind(rec.all(), exchangeclient.EventDropped); n != 0 {
				t.Errorf("%d dropped events before the NotAfter", n)
			}
			clk.Advance(time.Minute)
			rec.wait(t, 10*time.Second, "dropped", kindFor(exchangeclient.EventDropped, oldLeaf))
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
	// The caller's failure is reported after its token request ends, so
	// it may arrive after Token returned, and a background retry may
	// report before or after it: wait for it among all events.
	rec.wait(t, 2*time.Second, "blocking failed", func(ev exchangeclient.Event) bool {
		return ev.Kind == exchangeclient.EventFailed && ev.Blocking
	})
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
