package exchange_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
	"github.com/spiffe-sts/spiffe-sts/internal/ststest"
)

// TestConcurrentRequestsKeepTheirState sends token requests of different
// callers, audiences, scopes and grants at once, many times, and checks
// that every answer is the one its own request asked for: the server
// pools each request's state, so a value left over from, or shared with,
// another request would show here (and, under -race, as a race).
func TestConcurrentRequestsKeepTheirState(t *testing.T) {
	s := startObservedSTS(t, nil)
	type shape struct {
		id, audience, scope, wantScope string
		jwtSVID                        bool
	}
	shapes := []shape{
		{"spiffe://example.org/ns/prod/sa/a", ststest.APIAudience, "", "read", true},
		{"spiffe://example.org/ns/prod/sa/b", ststest.OrdersResource, "write admin", "write admin", false},
		{"spiffe://example.org/ns/prod/sa/c", ststest.APIAudience, "admin", "admin", true},
		{"spiffe://example.org/ns/prod/sa/d", ststest.OrdersResource, "", "read", false},
	}
	var wg sync.WaitGroup
	for i, sh := range shapes {
		svid := s.WorkloadSVID(t, sh.id)
		form := url.Values{"grant_type": {"client_credentials"}, "audience": {sh.audience}}
		if sh.jwtSVID {
			form = url.Values{
				"grant_type":         {string(protocol.GrantTypeTokenExchange)},
				"subject_token":      {s.JWTSVID(t, sh.id)},
				"subject_token_type": {string(protocol.TokenTypeJWT)},
				"audience":           {sh.audience},
			}
		}
		if sh.scope != "" {
			form.Set("scope", sh.scope)
		}
		body := form.Encode()
		ctx := s.Server.ConnContext(context.Background(), nil)
		state := &tls.ConnectionState{PeerCertificates: svid.Certificates}
		verifier := s.Verifier(sh.audience)
		wg.Go(func() {
			for n := range 50 {
				req := httptest.NewRequestWithContext(ctx, http.MethodPost, protocol.PathToken, strings.NewReader(body))
				req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
				req.TLS = state
				rec := httptest.NewRecorder()
				s.Server.ServeHTTP(rec, req)
				if err := checkAnswer(rec, sh.wantScope, sh.scope != sh.wantScope, sh.jwtSVID); err != nil {
					t.Errorf("shape %d, request %d: %v", i, n, err)
					return
				}
				var resp protocol.Response
				_ = json.Unmarshal(rec.Body.Bytes(), &resp)
				claims, err := verifier.Verify(context.Background(), resp.AccessToken, svid.Certificates[0])
				if err != nil {
					t.Errorf("shape %d, request %d: Verify: %v", i, n, err)
					return
				}
				if claims.Subject != sh.id || claims.ClientID != sh.id || claims.Scope != sh.wantScope ||
					len(claims.Audience) != 1 || claims.Audience[0] != sh.audience {
					t.Errorf("shape %d, request %d: token for sub %s, client_id %s, aud %v, scope %q; want %s, aud %s, scope %q",
						i, n, claims.Subject, claims.ClientID, claims.Audience, claims.Scope, sh.id, sh.audience, sh.wantScope)
					return
				}
			}
		})
	}
	wg.Wait()
}

// checkAnswer checks the status and JSON body of a token response:
// the scope member present exactly when it differs from the request, and
// issued_token_type for token exchange only.
func checkAnswer(rec *httptest.ResponseRecorder, wantScope string, scopeSent, exchange bool) error {
	if rec.Code != http.StatusOK {
		return fmt.Errorf("status %d: %s", rec.Code, rec.Body)
	}
	var m map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &m); err != nil {
		return err
	}
	if got, ok := m["scope"]; ok != scopeSent || (ok && got != wantScope) {
		return fmt.Errorf("scope member %v (present %t), want %q present %t", got, ok, wantScope, scopeSent)
	}
	if _, ok := m["issued_token_type"]; ok != exchange {
		return fmt.Errorf("issued_token_type present %t, want %t: %s", ok, exchange, rec.Body)
	}
	return nil
}
