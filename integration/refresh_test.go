//go:build integration

package integration

import (
	"sync"
	"testing"
	"time"

	"github.com/spiffe-sts/spiffe-sts/exchange/exchangeclient"
)

// shortTTLPolicy is policyRule with tokens that live for six seconds, far
// less than the client's SVID, so that Tokens refreshes them with the
// original grant rather than on rotation.
const shortTTLPolicy = `
policy "spiffe://example.org/ns/prod/sa/*" {
  audiences      = ["spiffe://example.org/api"]
  scopes         = ["read", "write"]
  default_scopes = ["read"]
  max_ttl        = "6s"
}
`

// TestTokensRefreshOnTheWallClock is the real-time counterpart of the
// unit tests that drive Tokens' refresh on a fake clock: against the real
// binaries and the system clock, each token is replaced in the background
// before it expires, and Token never waits for a request.
//
//  1. Start SPIRE and spiffe-sts with six-second tokens.
//  2. Keep tokens for the API audience, recording Tokens' events.
//  3. For three refreshes' worth of time, ask for the token every 100 ms:
//     each one returned is unexpired, and a new one appears before the
//     previous one's expiry.
//  4. Check: at least two refreshed events, none failed, none a caller
//     waited for.
func TestTokensRefreshOnTheWallClock(t *testing.T) {
	t.Parallel()
	// 1.
	e := newEnv(t, envOptions{clientSVIDTTL: 10 * time.Minute})
	s := e.startSTS(0, "", shortTTLPolicy)
	src := e.source()
	ctx := t.Context()

	// 2.
	var mu sync.Mutex
	var events []exchangeclient.Event
	tokens, err := e.client(s, src).NewTokens(ctx, exchangeclient.Request{Audience: []string{apiAud}},
		exchangeclient.WithEvents(func(ev exchangeclient.Event) {
			mu.Lock()
			events = append(events, ev)
			mu.Unlock()
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer tokens.Close()

	// 3.
	leaf := leafOf(t, src)
	var last string
	var lastExpiry time.Time
	distinct := 0
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for end := time.Now().Add(20 * time.Second); time.Now().Before(end); <-tick.C {
		tok, err := tokens.Token(ctx, leaf)
		if err != nil {
			t.Fatalf("Token: %v", err)
		}
		if tok == last {
			if !time.Now().Before(lastExpiry) {
				t.Fatalf("Token returned a token past its expiry %v", lastExpiry)
			}
			continue
		}
		now := time.Now()
		if last != "" && !now.Before(lastExpiry) {
			t.Errorf("a new token appeared at %v, after the previous one expired at %v", now, lastExpiry)
		}
		claims := mustClaims(t, tok)
		last, lastExpiry = tok, time.Unix(claims.Expiry, 0)
		distinct++
	}

	// 4.
	mu.Lock()
	defer mu.Unlock()
	refreshed := 0
	for _, ev := range events {
		switch {
		case ev.Kind == exchangeclient.EventFailed || ev.Blocking:
			t.Errorf("event %+v: no request should fail or be waited for", ev)
		case ev.Kind == exchangeclient.EventRefreshed:
			refreshed++
		}
	}
	if refreshed < 2 || distinct < 3 {
		t.Errorf("%d refreshed events and %d distinct tokens in 20s of 6s tokens, want at least 2 and 3", refreshed, distinct)
	}
}
