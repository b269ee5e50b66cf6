package exchangeclient_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/spiffe-sts/spiffe-sts/exchange/exchangeclient"
	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
	"github.com/spiffe-sts/spiffe-sts/internal/fakeclock"
	"github.com/spiffe-sts/spiffe-sts/internal/ststest"
)

const retryOKBody = `{"access_token":"tok","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","token_type":"Bearer","expires_in":60}`

// countingServer answers the token endpoint with answer(n) for the n-th
// request (from 1), over TLS with an STS SVID, on ln.
func countingServer(t *testing.T, s *ststest.STS, ln net.Listener, answer func(n int64, w http.ResponseWriter)) *atomic.Int64 {
	t.Helper()
	var n atomic.Int64
	svid := s.CA.SVID(t, ststest.ServerID, time.Hour)
	srv := &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { answer(n.Add(1), w) }),
		TLSConfig:         tlsconfig.TLSServerConfig(svid),
		ReadHeaderTimeout: 5 * time.Second,
	}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })
	return &n
}

// loopback is a listener on a free loopback port.
func loopback(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func answerJSON(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body))
}

func retryClient(t *testing.T, s *ststest.STS, addr string) *exchangeclient.Client {
	t.Helper()
	c, err := exchangeclient.New(context.Background(),
		exchangeclient.WithIssuerURL("https://"+addr),
		exchangeclient.WithX509Source(newSource(s, t, ststest.WorkloadID)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

var retryRequest = exchangeclient.Request{SubjectToken: "subject", Audience: []string{ststest.APIAudience}}

// TestExchangeRetriesUnavailable checks that a 503 temporarily_unavailable
// answer (a server draining, starting or without its audit trail) is sent
// again, and that the caller sees the token of the attempt that succeeds.
func TestExchangeRetriesUnavailable(t *testing.T) {
	s := ststest.Start(t, nil)
	ln := loopback(t)
	n := countingServer(t, s, ln, func(n int64, w http.ResponseWriter) {
		if n <= 3 {
			answerJSON(w, http.StatusServiceUnavailable, `{"error":"temporarily_unavailable"}`)
			return
		}
		answerJSON(w, http.StatusOK, retryOKBody)
	})
	tok, err := retryClient(t, s, ln.Addr().String()).Exchange(context.Background(), retryRequest)
	if err != nil {
		t.Fatalf("Exchange: %v", err)
	}
	if tok.AccessToken != "tok" || n.Load() != 4 {
		t.Fatalf("token %q after %d requests, want tok after 4", tok.AccessToken, n.Load())
	}
}

// TestExchangeRetriesRefusedConnection checks that a request to an STS
// that is not listening (restarting) succeeds once it listens again on
// the same port, within the caller's deadline.
func TestExchangeRetriesRefusedConnection(t *testing.T) {
	s := ststest.Start(t, nil)
	ln := loopback(t)
	addr := ln.Addr().String()
	ln.Close()
	c := retryClient(t, s, addr)

	tried := make(chan struct{})
	go func() {
		// Listen again once the client has seen the refusal at least once.
		<-tried
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Error(err)
			return
		}
		countingServer(t, s, ln, func(_ int64, w http.ResponseWriter) { answerJSON(w, http.StatusOK, retryOKBody) })
	}()
	// The refusal is observed through a first call with a short deadline.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	_, err := c.Exchange(ctx, retryRequest)
	cancel()
	if err == nil {
		t.Fatal("Exchange succeeded with nothing listening")
	}
	close(tried)
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.Exchange(ctx, retryRequest); err != nil {
		t.Fatalf("Exchange after the server came back: %v", err)
	}
}

// TestExchangeRetryStopsAtDeadline checks that an STS that stays
// unavailable yields its temporarily_unavailable error once the caller's
// deadline is near, not a hang and not a context error.
func TestExchangeRetryStopsAtDeadline(t *testing.T) {
	s := ststest.Start(t, nil)
	ln := loopback(t)
	n := countingServer(t, s, ln, func(_ int64, w http.ResponseWriter) {
		answerJSON(w, http.StatusServiceUnavailable, `{"error":"temporarily_unavailable","error_description":"audit"}`)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	_, err := retryClient(t, s, ln.Addr().String()).Exchange(ctx, retryRequest)
	if !errors.Is(err, protocol.ErrTemporarilyUnavailable) {
		t.Fatalf("Exchange error %v, want temporarily_unavailable", err)
	}
	if n.Load() < 2 {
		t.Errorf("%d requests, want the request retried", n.Load())
	}
}

// TestExchangeRefusalNotRetried checks that a refusal is returned after
// one request.
func TestExchangeRefusalNotRetried(t *testing.T) {
	s := ststest.Start(t, nil)
	ln := loopback(t)
	n := countingServer(t, s, ln, func(_ int64, w http.ResponseWriter) {
		answerJSON(w, http.StatusBadRequest, `{"error":"invalid_grant"}`)
	})
	_, err := retryClient(t, s, ln.Addr().String()).Exchange(context.Background(), retryRequest)
	if !errors.Is(err, protocol.ErrInvalidGrant) || n.Load() != 1 {
		t.Fatalf("Exchange error %v after %d requests, want invalid_grant after 1", err, n.Load())
	}
}

// TestExchangeFollowsRotation checks that once the source's X509-SVID
// rotates, Exchange presents the new certificate, even though a
// kept-alive connection made with the old one is still open: the issued
// token is bound to the new certificate (its cnf).
func TestExchangeFollowsRotation(t *testing.T) {
	s := ststest.Start(t, nil)
	first := s.CA.SVID(t, ststest.WorkloadID, time.Hour)
	src := newRotatingSource(s.CA.Bundle(), first)
	c, err := exchangeclient.New(context.Background(), exchangeclient.WithIssuerURL(s.URL),
		exchangeclient.WithX509Source(src), exchangeclient.WithServerID(spiffeid.RequireFromString(ststest.ServerID)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	v := s.Verifier(ststest.APIAudience)
	req := exchangeclient.Request{Audience: []string{ststest.APIAudience}}
	for i, svid := range []*x509svid.SVID{first, s.CA.SVID(t, ststest.WorkloadID, time.Hour)} {
		src.rotate(svid)
		tok, err := c.Exchange(context.Background(), req)
		if err != nil {
			t.Fatalf("exchange %d: %v", i, err)
		}
		if _, err := v.Verify(context.Background(), tok.AccessToken, svid.Certificates[0]); err != nil {
			t.Fatalf("exchange %d: the token is not bound to the source's current certificate: %v", i, err)
		}
	}
}

// arrivals records when each request reached a server, by a clock.
type arrivals struct {
	mu    sync.Mutex
	now   func() time.Time
	times []time.Time
}

func (a *arrivals) record() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.times = append(a.times, a.now())
}

func (a *arrivals) all() []time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.times)
}

// TestExchangeHonoursRetryAfter checks temporarily_unavailable answers
// with Retry-After, a caller over its rate limit (429) and a server that
// cannot judge requests now (503): within a budget shorter than
// Retry-After the client returns the refusal at once, with RetryAfter
// (and RateLimited for 429) set, and otherwise sends again no sooner than
// the server asked (the arrival times are a lower bound checked for
// correctness, not a speed target).
func TestExchangeHonoursRetryAfter(t *testing.T) {
	tests := []struct {
		name        string
		status      int
		rateLimited bool
	}{
		{name: "rate limited", status: http.StatusTooManyRequests, rateLimited: true},
		{name: "unavailable", status: http.StatusServiceUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := ststest.Start(t, nil)
			ln := loopback(t)
			at := &arrivals{now: time.Now}
			countingServer(t, s, ln, func(n int64, w http.ResponseWriter) {
				at.record()
				if n <= 2 {
					w.Header().Set("Retry-After", "1")
					answerJSON(w, tt.status, `{"error":"temporarily_unavailable","error_description":"later"}`)
					return
				}
				answerJSON(w, http.StatusOK, retryOKBody)
			})
			c := retryClient(t, s, ln.Addr().String())

			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			_, err := c.Exchange(ctx, retryRequest)
			cancel()
			perr, ok := errors.AsType[protocol.Error](err)
			if !ok || perr.Code != "temporarily_unavailable" || perr.RateLimited != tt.rateLimited || perr.RetryAfter != time.Second {
				t.Fatalf("Exchange error %#v, want temporarily_unavailable, RetryAfter 1s, RateLimited %v", err, tt.rateLimited)
			}
			if got := len(at.all()); got != 1 {
				t.Fatalf("%d requests within a budget shorter than Retry-After, want 1", got)
			}

			ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := c.Exchange(ctx, retryRequest); err != nil {
				t.Fatalf("Exchange: %v", err)
			}
			if times := at.all(); len(times) != 3 || times[2].Sub(times[1]) < time.Second {
				t.Fatalf("requests at %v, want 3, the last at least Retry-After (1s) after the second", times)
			}
		})
	}
}

// TestTokensRefreshHonoursRetryAfter checks the background refresh on a
// fake clock: a refresh answered 503 temporarily_unavailable with
// Retry-After: 5 (past the request timeout, so it is not re-sent within
// the request) is tried again 5s later, not after the 1s of the first
// backoff step.
func TestTokensRefreshHonoursRetryAfter(t *testing.T) {
	s := ststest.Start(t, nil)
	ln := loopback(t)
	clk := fakeclock.New(time.Now())
	at := &arrivals{now: clk.Now}
	var unavailable atomic.Bool
	countingServer(t, s, ln, func(_ int64, w http.ResponseWriter) {
		at.record()
		if unavailable.Load() {
			w.Header().Set("Retry-After", "5")
			answerJSON(w, http.StatusServiceUnavailable, `{"error":"temporarily_unavailable"}`)
			return
		}
		answerJSON(w, http.StatusOK, retryOKBody) // expires_in 60: refreshed at 40s
	})
	c, err := exchangeclient.New(context.Background(),
		exchangeclient.WithIssuerURL("https://"+ln.Addr().String()),
		exchangeclient.WithX509Source(newSource(s, t, ststest.WorkloadID)),
		exchangeclient.WithClock(clk), exchangeclient.WithTimeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	var rec recorder
	newTokens(t, c, exchangeclient.Request{Audience: []string{ststest.APIAudience}}, exchangeclient.WithEvents(rec.record))

	unavailable.Store(true)
	clk.Advance(40 * time.Second)
	rec.wait(t, 10*time.Second, "failed", func(ev exchangeclient.Event) bool { return ev.Kind == exchangeclient.EventFailed })
	unavailable.Store(false)
	failed := clk.Now()
	sent := len(at.all())
	// Wait for the refresh to be planned again: the clock's waiters are
	// then the certificate's drop, the source poll and the refresh.
	guard := time.After(10 * time.Second)
	for n, added := clk.Waiters(); n < 3; n, added = clk.Waiters() {
		select {
		case <-added:
		case <-guard:
			t.Fatal("the refresh was not planned again after the failure")
		}
	}

	clk.Advance(4 * time.Second)
	// A retry planned before Retry-After fired with this Advance; the
	// sleep gives it time to reach the server (it cannot fail a correct
	// client, which sends nothing until the next Advance).
	time.Sleep(200 * time.Millisecond)
	if times := at.all(); len(times) != sent {
		t.Fatalf("a request sent %v after the refusal, before its Retry-After (5s)", times[len(times)-1].Sub(failed))
	}
	clk.Advance(time.Second)
	rec.wait(t, 10*time.Second, "refreshed", func(ev exchangeclient.Event) bool { return ev.Kind == exchangeclient.EventRefreshed })
	if times := at.all(); len(times) != sent+1 || times[sent].Sub(failed) < 5*time.Second {
		t.Fatalf("requests at %v, want one more after the refusal at %v, at least 5s after it", times[sent:], failed)
	}
}
