package exchangeclient_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/exchange/exchangeclient"
	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
	"github.com/spiffe-sts/spiffe-sts/internal/ststest"
)

// source is a static exchangeclient.X509Source that records Close.
type source struct {
	*x509svid.SVID
	*spiffebundle.Bundle
	closed bool
}

func (s *source) Close() error { s.closed = true; return nil }

func newSource(s *ststest.STS, t *testing.T, id string) *source {
	return &source{SVID: s.WorkloadSVID(t, id), Bundle: s.CA.Bundle()}
}

// noSVID is a source that has no X509-SVID yet.
type noSVID struct{ *spiffebundle.Bundle }

func (noSVID) GetX509SVID() (*x509svid.SVID, error) { return nil, errors.New("no SVID yet") }

func TestExchange(t *testing.T) {
	s := ststest.Start(t, nil)
	ctx := context.Background()

	type config struct {
		src  *source
		opts []exchangeclient.Option
	}
	type expected struct {
		issuedType protocol.TokenType
		scope      []string
		audience   []string
		lifetime   time.Duration
	}
	tests := []struct {
		name             string
		overrideConfig   func(*config)
		overrideParams   func(*exchangeclient.Request)
		overrideExpected func(*expected)
		// expectErr is the exact error text; expectCode, when set, is the
		// protocol.Error code the error must match with errors.Is.
		expectErr  string
		expectCode protocol.Error
	}{
		{
			name: "JWT-SVID exchange",
		},
		{
			name:             "client_credentials",
			overrideParams:   func(r *exchangeclient.Request) { r.SubjectToken = "" },
			overrideExpected: func(e *expected) { e.issuedType = "" },
		},
		{
			name:             "scope granted",
			overrideParams:   func(r *exchangeclient.Request) { r.Scope = []string{"read", "write"} },
			overrideExpected: func(e *expected) { e.scope = []string{"read", "write"} },
		},
		{
			name:             "scope values joined and trimmed",
			overrideParams:   func(r *exchangeclient.Request) { r.Scope = []string{" write admin", ""} },
			overrideExpected: func(e *expected) { e.scope = []string{"write", "admin"} },
		},
		{
			name:             "scope narrowed by the policy",
			overrideParams:   func(r *exchangeclient.Request) { r.Scope = []string{"read", "delete"} },
			overrideExpected: func(e *expected) { e.scope = []string{"read"} },
		},
		{
			name:             "resource added to the audience",
			overrideParams:   func(r *exchangeclient.Request) { r.Resource = []string{ststest.OrdersResource} },
			overrideExpected: func(e *expected) { e.audience = []string{ststest.APIAudience, ststest.OrdersResource} },
		},
		{
			name:           "explicit subject token type",
			overrideParams: func(r *exchangeclient.Request) { r.SubjectTokenType = protocol.TokenTypeJWT },
		},
		{
			name:             "requested token type",
			overrideParams:   func(r *exchangeclient.Request) { r.RequestedTokenType = protocol.TokenTypeJWT },
			overrideExpected: func(e *expected) { e.issuedType = protocol.TokenTypeJWT },
		},
		{
			name: "server ID authorized exactly",
			overrideConfig: func(c *config) {
				c.opts = append(c.opts, exchangeclient.WithServerID(s.SVID.ID))
			},
		},
		{
			name:           "audience not allowed",
			overrideParams: func(r *exchangeclient.Request) { r.Audience = []string{"spiffe://example.org/other"} },
			expectErr:      `exchange: invalid_target: audience "spiffe://example.org/other" is not allowed for this client`,
			expectCode:     protocol.ErrInvalidTarget,
		},
		{
			name:           "subject token of another workload",
			overrideParams: func(r *exchangeclient.Request) { r.SubjectToken = s.JWTSVID(t, ststest.OtherID) },
			expectErr:      "exchange: invalid_grant: the subject token was neither issued nor sent to this client",
			expectCode:     protocol.ErrInvalidGrant,
		},
		{
			name: "workload denied by policy",
			overrideConfig: func(c *config) {
				c.src = newSource(s, t, ststest.DeniedID)
			},
			overrideParams: func(r *exchangeclient.Request) { r.SubjectToken = s.JWTSVID(t, ststest.DeniedID) },
			expectErr:      "exchange: unauthorized_client: no policy rule allows " + ststest.DeniedID,
			expectCode:     protocol.ErrUnauthorizedClient,
		},
		{
			name: "client certificate from an untrusted CA",
			overrideConfig: func(c *config) {
				c.src = &source{SVID: s.Evil.SVID(t, "spiffe://evil.example/web", time.Hour), Bundle: s.CA.Bundle()}
				c.opts = append(c.opts, exchangeclient.WithServerID(s.SVID.ID))
			},
			overrideParams: func(r *exchangeclient.Request) { r.SubjectToken = "" },
			expectErr:      "exchange: invalid_client: the client certificate is not a valid X509-SVID of a trusted trust domain",
			expectCode:     protocol.ErrInvalidClient,
		},
		{
			name:           "subject token type without a subject token",
			overrideParams: func(r *exchangeclient.Request) { r.SubjectToken = ""; r.SubjectTokenType = protocol.TokenTypeJWT },
			expectErr:      "exchangeclient: SubjectTokenType is set without a SubjectToken",
		},
	}
	// Every case runs against the HTTP token endpoint and the gRPC API,
	// with the same results.
	for _, api := range []struct {
		name string
		opts []exchangeclient.Option
	}{
		{name: "HTTP"},
		{name: "gRPC", opts: []exchangeclient.Option{exchangeclient.WithGRPC()}},
	} {
		for _, tt := range tests {
			t.Run(api.name+"/"+tt.name, func(t *testing.T) {
				cfg := config{src: newSource(s, t, ststest.WorkloadID), opts: slices.Clone(api.opts)}
				params := exchangeclient.Request{
					SubjectToken: s.JWTSVID(t, ststest.WorkloadID),
					Audience:     []string{ststest.APIAudience},
				}
				want := expected{
					issuedType: protocol.TokenTypeAccessToken,
					scope:      []string{"read"},
					audience:   []string{ststest.APIAudience},
					lifetime:   5 * time.Minute,
				}
				if tt.overrideConfig != nil {
					tt.overrideConfig(&cfg)
				}
				if tt.overrideParams != nil {
					tt.overrideParams(&params)
				}
				if tt.overrideExpected != nil {
					tt.overrideExpected(&want)
				}

				opts := append([]exchangeclient.Option{
					exchangeclient.WithIssuerURL(s.URL),
					exchangeclient.WithX509Source(cfg.src),
				}, cfg.opts...)
				client, err := exchangeclient.New(ctx, opts...)
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				defer client.Close()

				before := time.Now()
				tok, err := client.Exchange(ctx, params)
				if tt.expectErr != "" {
					if err == nil || err.Error() != tt.expectErr {
						t.Fatalf("Exchange error = %v, want %q", err, tt.expectErr)
					}
					if tt.expectCode.Code == "" {
						var oauthErr protocol.Error
						if errors.As(err, &oauthErr) {
							t.Fatalf("Exchange error %v is a protocol.Error, want a local error", err)
						}
						return
					}
					if !errors.Is(err, tt.expectCode) {
						t.Fatalf("errors.Is(%v, %v) = false", err, tt.expectCode)
					}
					return
				}
				if err != nil {
					t.Fatalf("Exchange: %v", err)
				}
				if tok.IssuedTokenType != want.issuedType {
					t.Errorf("IssuedTokenType = %q, want %q", tok.IssuedTokenType, want.issuedType)
				}
				if tok.TokenType != "Bearer" {
					t.Errorf("TokenType = %q, want Bearer", tok.TokenType)
				}
				if !slices.Equal(tok.Scope, want.scope) {
					t.Errorf("Scope = %q, want %q", tok.Scope, want.scope)
				}
				if lo, hi := before.Add(want.lifetime-2*time.Second), time.Now().Add(want.lifetime+time.Second); tok.Expiry.Before(lo) || tok.Expiry.After(hi) {
					t.Errorf("Expiry = %v, want within [%v, %v]", tok.Expiry, lo, hi)
				}

				// The token verifies for the audience and is bound to the
				// certificate the client presented.
				claims, err := s.Verifier(want.audience[0]).Verify(ctx, tok.AccessToken, cfg.src.Certificates[0])
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if claims.Subject != cfg.src.ID.String() || claims.ClientID != cfg.src.ID.String() {
					t.Errorf("sub, client_id = %q, %q, want %s", claims.Subject, claims.ClientID, cfg.src.ID)
				}
				if !slices.Equal([]string(claims.Audience), want.audience) {
					t.Errorf("aud = %q, want %q", claims.Audience, want.audience)
				}
				if !slices.Equal(claims.Scopes(), want.scope) {
					t.Errorf("scope claim = %q, want %q", claims.Scopes(), want.scope)
				}
				other := ststest.Start(t, nil).WorkloadSVID(t, ststest.WorkloadID)
				if _, err := s.Verifier(want.audience[0]).Verify(ctx, tok.AccessToken, other.Certificates[0]); !errors.Is(err, accesstoken.ErrNotBound) {
					t.Errorf("Verify with another certificate: %v, want %v", err, accesstoken.ErrNotBound)
				}
			})
		}
	}
}

func TestExchangeWrongServerID(t *testing.T) {
	s := ststest.Start(t, nil)
	wrong := spiffeid.RequireFromString("spiffe://example.org/not-sts")
	client, err := exchangeclient.New(context.Background(),
		exchangeclient.WithIssuerURL(s.URL),
		exchangeclient.WithX509Source(newSource(s, t, ststest.WorkloadID)),
		exchangeclient.WithServerID(wrong),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	_, err = client.Exchange(context.Background(), exchangeclient.Request{
		SubjectToken: s.JWTSVID(t, ststest.WorkloadID),
		Audience:     []string{ststest.APIAudience},
	})
	if err == nil {
		t.Fatal("Exchange succeeded with a server that is not the authorized ID")
	}
	var oauthErr protocol.Error
	if errors.As(err, &oauthErr) {
		t.Fatalf("Exchange error %v is a protocol.Error; want a TLS failure", err)
	}
	if !strings.Contains(err.Error(), `unexpected ID "`+ststest.ServerID+`"`) {
		t.Fatalf("Exchange error = %v, want the handshake to refuse %s", err, ststest.ServerID)
	}
}

func TestExchangeOtherTrustDomainRefusedByDefault(t *testing.T) {
	// Without WithServerID only servers in the client's own trust domain
	// are authorized; the STS is in example.org.
	s := ststest.Start(t, nil)
	bundles := spiffebundle.NewSet(s.CA.Bundle(), s.Evil.Bundle())
	src := struct {
		*x509svid.SVID
		*spiffebundle.Set
	}{s.Evil.SVID(t, "spiffe://evil.example/web", time.Hour), bundles}
	client, err := exchangeclient.New(context.Background(), exchangeclient.WithIssuerURL(s.URL), exchangeclient.WithX509Source(src))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	_, err = client.Exchange(context.Background(), exchangeclient.Request{Audience: []string{ststest.APIAudience}})
	if err == nil || !strings.Contains(err.Error(), `unexpected trust domain "example.org"`) {
		t.Fatalf("Exchange error = %v, want the handshake to refuse the example.org server", err)
	}
}

func TestNew(t *testing.T) {
	s := ststest.Start(t, nil)
	src := newSource(s, t, ststest.WorkloadID)
	missingSocket := "unix://" + filepath.Join(t.TempDir(), "missing.sock")
	tests := []struct {
		name           string
		overrideConfig func(*[]exchangeclient.Option)
		timeout        time.Duration
		expectErr      string
		// expectErrIs is checked with errors.Is instead of expectErr.
		expectErrIs error
	}{
		{
			name: "ok",
		},
		{
			name:           "missing issuer URL",
			overrideConfig: func(o *[]exchangeclient.Option) { *o = append(*o, exchangeclient.WithIssuerURL("")) },
			expectErr:      "exchangeclient: the issuer URL is required (WithIssuerURL)",
		},
		{
			name: "http issuer URL",
			overrideConfig: func(o *[]exchangeclient.Option) {
				*o = append(*o, exchangeclient.WithIssuerURL("http://127.0.0.1:8443"))
			},
			expectErr: `exchangeclient: issuer URL "http://127.0.0.1:8443" must be an https URL`,
		},
		{
			name:           "issuer URL with a query",
			overrideConfig: func(o *[]exchangeclient.Option) { *o = append(*o, exchangeclient.WithIssuerURL(s.URL+"?x=1")) },
			expectErr:      `exchangeclient: issuer URL "` + s.URL + `?x=1" must not have user info, a query or a fragment`,
		},
		{
			// The server's issuer URL rule (protocol.CheckIssuerURL).
			name:           "issuer URL with a trailing slash",
			overrideConfig: func(o *[]exchangeclient.Option) { *o = append(*o, exchangeclient.WithIssuerURL(s.URL+"/")) },
			expectErr:      `exchangeclient: issuer URL "` + s.URL + `/" must not end in a slash`,
		},
		{
			name:           "issuer URL with a path",
			overrideConfig: func(o *[]exchangeclient.Option) { *o = append(*o, exchangeclient.WithIssuerURL(s.URL+"/sts")) },
			expectErr:      `exchangeclient: issuer URL "` + s.URL + `/sts" must not have a path`,
		},
		{
			name:           "nil source",
			overrideConfig: func(o *[]exchangeclient.Option) { *o = append(*o, exchangeclient.WithX509Source(nil)) },
			expectErr:      "exchangeclient: WithX509Source was given a nil source",
		},
		{
			name: "source without an SVID",
			overrideConfig: func(o *[]exchangeclient.Option) {
				*o = append(*o, exchangeclient.WithX509Source(noSVID{s.CA.Bundle()}))
			},
			expectErr: "exchangeclient: the source has no X509-SVID: no SVID yet",
		},
		{
			name:           "zero timeout",
			overrideConfig: func(o *[]exchangeclient.Option) { *o = append(*o, exchangeclient.WithTimeout(0)) },
			expectErr:      "exchangeclient: timeout must be positive, got 0s",
		},
		{
			name: "no source and no Workload API",
			overrideConfig: func(o *[]exchangeclient.Option) {
				*o = []exchangeclient.Option{exchangeclient.WithIssuerURL(s.URL), exchangeclient.WithWorkloadAPIAddr(missingSocket)}
			},
			timeout:     300 * time.Millisecond,
			expectErrIs: context.DeadlineExceeded,
		},
		{
			name: "Workload API address ignored with a source",
			overrideConfig: func(o *[]exchangeclient.Option) {
				*o = append(*o, exchangeclient.WithWorkloadAPIAddr(missingSocket))
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := []exchangeclient.Option{exchangeclient.WithIssuerURL(s.URL), exchangeclient.WithX509Source(src)}
			if tt.overrideConfig != nil {
				tt.overrideConfig(&opts)
			}
			ctx := context.Background()
			if tt.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.timeout)
				defer cancel()
			}
			client, err := exchangeclient.New(ctx, opts...)
			switch {
			case tt.expectErrIs != nil:
				if !errors.Is(err, tt.expectErrIs) {
					t.Fatalf("New error = %v, want %v", err, tt.expectErrIs)
				}
				return
			case tt.expectErr != "":
				if err == nil || err.Error() != tt.expectErr {
					t.Fatalf("New error = %v, want %q", err, tt.expectErr)
				}
				return
			case err != nil:
				t.Fatalf("New: %v", err)
			}
			if err := client.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
		})
	}
}

func TestCloseLeavesCallersSource(t *testing.T) {
	s := ststest.Start(t, nil)
	src := newSource(s, t, ststest.WorkloadID)
	ctx := context.Background()
	client, err := exchangeclient.New(ctx, exchangeclient.WithIssuerURL(s.URL), exchangeclient.WithX509Source(src))
	if err != nil {
		t.Fatal(err)
	}
	req := exchangeclient.Request{Audience: []string{ststest.APIAudience}}
	if _, err := client.Exchange(ctx, req); err != nil {
		t.Fatal(err)
	}
	if err := client.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := client.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if src.closed {
		t.Fatal("Close closed the caller's source")
	}
	if _, err := client.Exchange(ctx, req); err == nil || err.Error() != "exchangeclient: client is closed" {
		t.Fatalf("Exchange after Close: %v, want exchangeclient: client is closed", err)
	}

	// The source still serves a new client.
	again, err := exchangeclient.New(ctx, exchangeclient.WithIssuerURL(s.URL), exchangeclient.WithX509Source(src))
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	if _, err := again.Exchange(ctx, req); err != nil {
		t.Fatalf("Exchange with the source after the first client closed: %v", err)
	}
}

// TestExchangeResponses checks how responses are validated, against a
// server that answers with fixed bodies.
func TestExchangeResponses(t *testing.T) {
	s := ststest.Start(t, nil)
	svid := s.CA.SVID(t, ststest.ServerID, time.Hour)
	// mu guards the fixed response and the recorded request.
	var mu sync.Mutex
	var status int
	var contentType, body string
	var got http.Header
	var form map[string][]string
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		got = r.Header.Clone()
		if err := r.ParseForm(); err != nil {
			t.Error(err)
		}
		form = r.PostForm
		w.Header().Set("Content-Type", contentType)
		w.WriteHeader(status)
		_, _ = w.Write([]byte(body))
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: handler, TLSConfig: tlsconfig.TLSServerConfig(svid), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })

	client, err := exchangeclient.New(context.Background(),
		exchangeclient.WithIssuerURL("https://"+ln.Addr().String()),
		exchangeclient.WithX509Source(newSource(s, t, ststest.WorkloadID)),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	const okBody = `{"access_token":"tok","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","token_type":"Bearer","expires_in":60}`
	tests := []struct {
		name           string
		overrideParams func(status *int, contentType, body *string)
		expectErr      string
		expectScope    []string
	}{
		{
			name:        "ok, scope omitted means as requested",
			expectScope: []string{"read", "write"},
		},
		{
			name: "scope granted differs",
			overrideParams: func(_ *int, _, b *string) {
				*b = strings.Replace(okBody, `"expires_in":60`, `"expires_in":60,"scope":"read"`, 1)
			},
			expectScope: []string{"read"},
		},
		{
			name:           "token type in lower case",
			overrideParams: func(_ *int, _, b *string) { *b = strings.Replace(okBody, "Bearer", "bearer", 1) },
			expectScope:    []string{"read", "write"},
		},
		{
			name:           "not a bearer token",
			overrideParams: func(_ *int, _, b *string) { *b = strings.Replace(okBody, "Bearer", "DPoP", 1) },
			expectErr:      `exchangeclient: the token response has token_type "DPoP", want Bearer`,
		},
		{
			name:           "no access token",
			overrideParams: func(_ *int, _, b *string) { *b = strings.Replace(okBody, `"tok"`, `""`, 1) },
			expectErr:      "exchangeclient: the token response has no access_token",
		},
		{
			name:           "zero expires_in",
			overrideParams: func(_ *int, _, b *string) { *b = strings.Replace(okBody, "60", "0", 1) },
			expectErr:      "exchangeclient: the token response has expires_in 0, want a positive number of seconds",
		},
		{
			name:           "missing expires_in",
			overrideParams: func(_ *int, _, b *string) { *b = strings.Replace(okBody, `,"expires_in":60`, "", 1) },
			expectErr:      "exchangeclient: the token response has expires_in 0, want a positive number of seconds",
		},
		{
			name:           "malformed JSON",
			overrideParams: func(_ *int, _, b *string) { *b = "{" },
			expectErr:      "exchangeclient: malformed token response: unexpected end of JSON input",
		},
		{
			name: "OAuth error",
			overrideParams: func(st *int, _, b *string) {
				*st, *b = http.StatusBadRequest, `{"error":"invalid_scope","error_description":"no"}`
			},
			expectErr: "exchange: invalid_scope: no",
		},
		{
			name: "error page without an OAuth error",
			overrideParams: func(st *int, ct, b *string) {
				*st, *ct, *b = http.StatusBadGateway, "text/html", "<html>bad gateway</html>"
			},
			expectErr: "exchangeclient: token endpoint answered 502 Bad Gateway without an OAuth error",
		},
		{
			name:           "redirect not followed",
			overrideParams: func(st *int, _, b *string) { *st, *b = http.StatusTemporaryRedirect, "" },
			expectErr:      "exchangeclient: token endpoint answered 307 Temporary Redirect without an OAuth error",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mu.Lock()
			status, contentType, body = http.StatusOK, "application/json", okBody
			if tt.overrideParams != nil {
				tt.overrideParams(&status, &contentType, &body)
			}
			mu.Unlock()
			tok, err := client.Exchange(context.Background(), exchangeclient.Request{
				SubjectToken: "subject",
				Audience:     []string{"a1", "a2"},
				Resource:     []string{"https://r"},
				Scope:        []string{"read", "write"},
			})
			if tt.expectErr != "" {
				if err == nil || err.Error() != tt.expectErr {
					t.Fatalf("Exchange error = %v, want %q", err, tt.expectErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Exchange: %v", err)
			}
			if tok.AccessToken != "tok" || !slices.Equal(tok.Scope, tt.expectScope) {
				t.Fatalf("token = %q scope %q, want tok scope %q", tok.AccessToken, tok.Scope, tt.expectScope)
			}
			mu.Lock()
			defer mu.Unlock()
			// RFC 8693 §2.1 parameters, form-encoded.
			wantForm := map[string][]string{
				"grant_type":         {"urn:ietf:params:oauth:grant-type:token-exchange"},
				"client_id":          {ststest.WorkloadID},
				"subject_token":      {"subject"},
				"subject_token_type": {"urn:ietf:params:oauth:token-type:jwt"},
				"audience":           {"a1", "a2"},
				"resource":           {"https://r"},
				"scope":              {"read write"},
			}
			for k, v := range wantForm {
				if !slices.Equal(form[k], v) {
					t.Errorf("form %s = %q, want %q", k, form[k], v)
				}
			}
			if len(form) != len(wantForm) {
				t.Errorf("form = %q, want %q", form, wantForm)
			}
			if ct := got.Get("Content-Type"); ct != "application/x-www-form-urlencoded" {
				t.Errorf("Content-Type = %q", ct)
			}
		})
	}
}
