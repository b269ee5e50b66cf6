package issuer_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/lestrrat-go/jwx/v3/jwa"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/issuer"
)

func baseConfig(tb testing.TB) issuer.Config {
	return issuer.Config{
		IssuerURL: testIssuerURL,
		Keys:      staticKeys(tb, testSigner(tb, jwa.ES256())),
		Clock:     fixedClock,
	}
}

func baseClaims() accesstoken.Claims {
	return accesstoken.Claims{
		Subject:  testSPIFFEID,
		ClientID: testSPIFFEID,
		Audience: accesstoken.Audience{testAudience},
		Scope:    "read write",
	}
}

type mintParams struct {
	ctx    context.Context
	claims *accesstoken.Claims
	leaf   *x509.Certificate
	ttl    time.Duration
}

func TestMint(t *testing.T) {
	iat := testNow.Unix()
	baseLeaf := newLeaf(t, testNow.Add(time.Hour))

	for _, tt := range []struct {
		name             string
		overrideConfig   func(*issuer.Config)
		overrideParams   func(*mintParams)
		overrideExpected func(*accesstoken.Claims)
		expectErr        string
		expectErrIs      error
	}{
		{
			name: "baseline",
		},
		{
			name:           "EdDSA",
			overrideConfig: func(c *issuer.Config) { c.Keys = staticKeys(t, testSigner(t, jwa.EdDSA())) },
		},
		{
			name:           "RS256",
			overrideConfig: func(c *issuer.Config) { c.Keys = staticKeys(t, testSigner(t, jwa.RS256())) },
		},
		{
			name:           "ttl caps exp",
			overrideParams: func(p *mintParams) { p.ttl = 2 * time.Minute },
			overrideExpected: func(c *accesstoken.Claims) {
				c.Expiry = iat + 120
			},
		},
		{
			name:           "ttl rounds down to whole seconds",
			overrideParams: func(p *mintParams) { p.ttl = 90*time.Second + 999*time.Millisecond },
			overrideExpected: func(c *accesstoken.Claims) {
				c.Expiry = iat + 90
			},
		},
		{
			name:           "negative ttl uses DefaultTTL",
			overrideConfig: func(c *issuer.Config) { c.DefaultTTL = 3 * time.Minute },
			overrideParams: func(p *mintParams) { p.ttl = -time.Second },
			overrideExpected: func(c *accesstoken.Claims) {
				c.Expiry = iat + 180
			},
		},
		{
			name:           "ttl longer than DefaultTTL",
			overrideParams: func(p *mintParams) { p.ttl = 10 * time.Minute },
			overrideExpected: func(c *accesstoken.Claims) {
				c.Expiry = iat + 600
			},
		},
		{
			name:           "claims.Expiry caps exp",
			overrideParams: func(p *mintParams) { p.claims.Expiry = iat + 60 },
			overrideExpected: func(c *accesstoken.Claims) {
				c.Expiry = iat + 60
			},
		},
		{
			name:           "claims.Expiry later than ttl is ignored",
			overrideParams: func(p *mintParams) { p.claims.Expiry = iat + 3600 },
		},
		{
			name:           "leaf NotAfter caps exp",
			overrideParams: func(p *mintParams) { p.leaf = newLeaf(t, testNow.Add(90*time.Second)) },
			overrideExpected: func(c *accesstoken.Claims) {
				c.Expiry = testNow.Add(90 * time.Second).Truncate(time.Second).Unix()
			},
		},
		{
			name: "leaf NotAfter caps a long ttl",
			overrideParams: func(p *mintParams) {
				p.ttl = 24 * time.Hour
			},
			overrideExpected: func(c *accesstoken.Claims) {
				c.Expiry = baseLeaf.NotAfter.Unix()
			},
		},
		{
			name: "caller values of computed claims are replaced",
			overrideParams: func(p *mintParams) {
				p.claims.Issuer = "https://evil.example.org"
				p.claims.IssuedAt = 1
				p.claims.NotBefore = 1
				p.claims.JWTID = "chosen"
				p.claims.Confirmation.X5TS256 = "chosen"
			},
		},
		{
			name: "actor and several audiences are kept",
			overrideParams: func(p *mintParams) {
				p.claims.Audience = accesstoken.Audience{testAudience, "spiffe://example.org/other"}
				p.claims.Actor = &accesstoken.Actor{Subject: "spiffe://example.org/proxy"}
			},
			overrideExpected: func(c *accesstoken.Claims) {
				c.Audience = accesstoken.Audience{testAudience, "spiffe://example.org/other"}
				c.Actor = &accesstoken.Actor{Subject: "spiffe://example.org/proxy"}
			},
		},
		{
			name:           "nil claims",
			overrideParams: func(p *mintParams) { p.claims = nil },
			expectErr:      "issuer: claims are nil",
		},
		{
			name:           "nil leaf",
			overrideParams: func(p *mintParams) { p.leaf = nil },
			expectErr:      "issuer: no certificate to bind the token to",
		},
		{
			name:           "no subject",
			overrideParams: func(p *mintParams) { p.claims.Subject = "" },
			expectErr:      "issuer: claims have no subject",
		},
		{
			name:           "no client_id",
			overrideParams: func(p *mintParams) { p.claims.ClientID = "" },
			expectErr:      "issuer: claims have no client_id",
		},
		{
			name:           "no audience",
			overrideParams: func(p *mintParams) { p.claims.Audience = nil },
			expectErr:      "issuer: claims have no audience",
		},
		{
			name:           "empty audience value",
			overrideParams: func(p *mintParams) { p.claims.Audience = accesstoken.Audience{testAudience, ""} },
			expectErr:      "issuer: claims have an empty audience value",
		},
		{
			name:           "leaf already expired",
			overrideParams: func(p *mintParams) { p.leaf = newLeaf(t, testNow.Add(-time.Minute)) },
			expectErr:      "issuer: token lifetime would be under one second: exp " + itoa(testNow.Add(-time.Minute).Unix()) + " is not after iat " + itoa(iat),
			expectErrIs:    issuer.ErrLifetime,
		},
		{
			name: "leaf expires within the current second",
			overrideParams: func(p *mintParams) {
				p.leaf = newLeaf(t, testNow.Truncate(time.Second))
			},
			expectErr:   "issuer: token lifetime would be under one second: exp " + itoa(iat) + " is not after iat " + itoa(iat),
			expectErrIs: issuer.ErrLifetime,
		},
		{
			name:           "claims.Expiry not after now",
			overrideParams: func(p *mintParams) { p.claims.Expiry = iat },
			expectErr:      "issuer: token lifetime would be under one second: exp " + itoa(iat) + " is not after iat " + itoa(iat),
			expectErrIs:    issuer.ErrLifetime,
		},
		{
			name:           "ttl under a second",
			overrideParams: func(p *mintParams) { p.ttl = 999 * time.Millisecond },
			expectErr:      "issuer: token lifetime would be under one second: exp " + itoa(iat) + " is not after iat " + itoa(iat),
			expectErrIs:    issuer.ErrLifetime,
		},
		{
			name: "canceled context",
			overrideParams: func(p *mintParams) {
				ctx, cancel := context.WithCancel(context.Background())
				cancel()
				p.ctx = ctx
			},
			expectErr:   "issuer: context canceled",
			expectErrIs: context.Canceled,
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := baseConfig(t)
			if tt.overrideConfig != nil {
				tt.overrideConfig(&cfg)
			}
			iss, err := issuer.New(cfg)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			claims := baseClaims()
			p := mintParams{ctx: context.Background(), claims: &claims, leaf: baseLeaf}
			if tt.overrideParams != nil {
				tt.overrideParams(&p)
			}
			var before accesstoken.Claims
			if p.claims != nil {
				before = *p.claims
			}

			raw, err := iss.Mint(p.ctx, p.claims, p.leaf, p.ttl)
			if tt.expectErr != "" {
				if err == nil || err.Error() != tt.expectErr {
					t.Fatalf("Mint error = %v, want %q", err, tt.expectErr)
				}
				if tt.expectErrIs != nil && !errors.Is(err, tt.expectErrIs) {
					t.Fatalf("Mint error %v is not %v", err, tt.expectErrIs)
				}
				if raw != "" {
					t.Fatalf("Mint returned a token with an error")
				}
				if p.claims != nil && !reflect.DeepEqual(*p.claims, before) {
					t.Fatalf("Mint changed claims on error: %+v, was %+v", *p.claims, before)
				}
				return
			}
			if err != nil {
				t.Fatalf("Mint: %v", err)
			}

			want := baseClaims()
			want.Issuer = testIssuerURL
			want.IssuedAt = iat
			want.NotBefore = iat
			want.Expiry = iat + 300
			want.Confirmation.X5TS256 = accesstoken.Thumbprint(p.leaf)
			if tt.overrideExpected != nil {
				tt.overrideExpected(&want)
			}
			checkJTI(t, p.claims.JWTID)
			want.JWTID = p.claims.JWTID

			if !reflect.DeepEqual(*p.claims, want) {
				t.Errorf("claims after Mint:\n got %+v\nwant %+v", *p.claims, want)
			}

			// The header is exactly typ, kid and alg (RFC 9068 §2.1).
			checkHeader(t, raw, map[string]string{
				"typ": "at+jwt",
				"kid": cfg.Keys.SigningKey().KeyID(),
				"alg": cfg.Keys.SigningKey().Algorithm().String(),
			})

			// The payload is the JSON encoding of the claims.
			var payload accesstoken.Claims
			decodeSegment(t, raw, 1, &payload)
			if !reflect.DeepEqual(payload, want) {
				t.Errorf("token payload:\n got %+v\nwant %+v", payload, want)
			}

			// A resource server accepts it on the bound connection only.
			v := accesstoken.NewVerifier(testIssuerURL, iss.KeySet(), &accesstoken.Config{
				Audiences: []string{testAudience},
				Now:       fixedClock,
			})
			got, err := v.Verify(context.Background(), raw, p.leaf)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if !reflect.DeepEqual(*got, want) {
				t.Errorf("verified claims:\n got %+v\nwant %+v", *got, want)
			}
			other := newLeaf(t, testNow.Add(time.Hour))
			if _, err := v.Verify(context.Background(), raw, other); !errors.Is(err, accesstoken.ErrNotBound) {
				t.Errorf("Verify with another certificate: err = %v, want %v", err, accesstoken.ErrNotBound)
			}
		})
	}
}

func TestMintUniqueJTI(t *testing.T) {
	iss, err := issuer.New(baseConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	leaf := newLeaf(t, testNow.Add(time.Hour))
	seen := make(map[string]bool, 1000)
	for range 1000 {
		claims := baseClaims()
		if _, err := iss.Mint(context.Background(), &claims, leaf, 0); err != nil {
			t.Fatal(err)
		}
		checkJTI(t, claims.JWTID)
		if seen[claims.JWTID] {
			t.Fatalf("jti %q minted twice", claims.JWTID)
		}
		seen[claims.JWTID] = true
	}
}

// TestMintConcurrent runs Mint from several goroutines; with -race it checks
// that the shared protected header is safe.
func TestMintConcurrent(t *testing.T) {
	iss, err := issuer.New(baseConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	leaf := newLeaf(t, testNow.Add(time.Hour))
	v := accesstoken.NewVerifier(testIssuerURL, iss.KeySet(), &accesstoken.Config{
		Audiences: []string{testAudience},
		Now:       fixedClock,
	})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 20 {
				claims := baseClaims()
				raw, err := iss.Mint(context.Background(), &claims, leaf, 0)
				if err != nil {
					t.Errorf("Mint: %v", err)
					return
				}
				if _, err := v.Verify(context.Background(), raw, leaf); err != nil {
					t.Errorf("Verify: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func TestMintLogs(t *testing.T) {
	var buf bytes.Buffer
	cfg := baseConfig(t)
	cfg.Logger = hclog.New(&hclog.LoggerOptions{Output: &buf, Level: hclog.Debug, JSONFormat: true})
	iss, err := issuer.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	leaf := newLeaf(t, testNow.Add(time.Hour))
	claims := baseClaims()
	raw, err := iss.Mint(context.Background(), &claims, leaf, 0)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), raw) || strings.Contains(buf.String(), strings.Split(raw, ".")[2]) {
		t.Fatal("the log contains the token")
	}
	var minted map[string]any
	for line := range strings.Lines(buf.String()) {
		var entry map[string]any
		if err := json.Unmarshal([]byte(line), &entry); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if entry["@message"] == "minted access token" {
			minted = entry
		}
	}
	if minted == nil {
		t.Fatalf("no mint log line in %s", buf.String())
	}
	for k, want := range map[string]any{
		"@module":  "issuer",
		"@level":   "debug",
		"jti":      claims.JWTID,
		"subject":  testSPIFFEID,
		"x5t_s256": accesstoken.Thumbprint(leaf),
		"kid":      cfg.Keys.SigningKey().KeyID(),
	} {
		if minted[k] != want {
			t.Errorf("log %q = %v, want %v", k, minted[k], want)
		}
	}
}

func checkJTI(t *testing.T, jti string) {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(jti)
	if err != nil || len(b) != 16 {
		t.Fatalf("jti %q is not 128 bits of unpadded base64url (%d bytes, %v)", jti, len(b), err)
	}
}

func checkHeader(t *testing.T, raw string, want map[string]string) {
	t.Helper()
	var got map[string]string
	decodeSegment(t, raw, 0, &got)
	if !reflect.DeepEqual(got, want) {
		t.Errorf("header = %v, want %v", got, want)
	}
}

func decodeSegment(t *testing.T, raw string, i int, v any) {
	t.Helper()
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d segments, want 3", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[i])
	if err != nil {
		t.Fatalf("segment %d: %v", i, err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("segment %d: %v", i, err)
	}
}

func itoa(n int64) string { return strings.TrimSpace(string(must(json.Marshal(n)))) }

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestMintBufferReuse mints tokens of very different sizes in turn, so
// that pooled buffers are reused both grown and short, and over the
// pooled size, and checks that each verifies with the claims it was
// minted with.
func TestMintBufferReuse(t *testing.T) {
	iss, err := issuer.New(baseConfig(t))
	if err != nil {
		t.Fatal(err)
	}
	leaf := newLeaf(t, testNow.Add(time.Hour))
	v := accesstoken.NewVerifier(testIssuerURL, iss.KeySet(), &accesstoken.Config{
		Audiences: []string{testAudience},
		Now:       fixedClock,
	})
	for i, scopeLen := range []int{0, 4000, 3, 40000, 10, 0} {
		claims := baseClaims()
		claims.Scope = strings.Repeat("s", scopeLen)
		raw, err := iss.Mint(context.Background(), &claims, leaf, 0)
		if err != nil {
			t.Fatalf("%d: Mint: %v", i, err)
		}
		got, err := v.Verify(context.Background(), raw, leaf)
		if err != nil {
			t.Fatalf("%d: Verify: %v", i, err)
		}
		if got.Scope != claims.Scope || got.JWTID != claims.JWTID {
			t.Errorf("%d: verified scope of %d bytes, jti %q; minted %d bytes, jti %q", i, len(got.Scope), got.JWTID, len(claims.Scope), claims.JWTID)
		}
	}
}

// failingSigner is an ES256 Signer whose key (an HSM, say) refuses to sign.
type failingSigner struct{ issuer.Signer }

func (failingSigner) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return nil, errors.New("HSM unavailable")
}

// TestMintSignErrorLeavesClaims checks that a failed signature leaves the
// caller's claims as they were: Mint completes them in place.
func TestMintSignErrorLeavesClaims(t *testing.T) {
	cfg := baseConfig(t)
	cfg.Keys = staticKeys(t, failingSigner{testSigner(t, jwa.ES256())})
	iss, err := issuer.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	claims := baseClaims()
	claims.Expiry = testNow.Add(time.Minute).Unix()
	want := claims
	if _, err := iss.Mint(context.Background(), &claims, newLeaf(t, testNow.Add(time.Hour)), 0); err == nil || !strings.Contains(err.Error(), "HSM unavailable") {
		t.Fatalf("Mint: got %v, want the signer's error", err)
	}
	if !reflect.DeepEqual(claims, want) {
		t.Errorf("claims after a failed Mint = %+v, want them unchanged, %+v", claims, want)
	}
}

// opaqueSigner hides the key type behind the Signer interface, as an
// HSM's Signer does.
type opaqueSigner struct{ issuer.Signer }

// TestMintWithOpaqueSigner checks that a token signed through a Signer
// that is not an in-memory key (jwx converts its DER ECDSA signature to
// r‖s) verifies like one signed with the key itself.
func TestMintWithOpaqueSigner(t *testing.T) {
	for _, alg := range []jwa.SignatureAlgorithm{jwa.ES256(), jwa.EdDSA()} {
		t.Run(alg.String(), func(t *testing.T) {
			cfg := baseConfig(t)
			cfg.Keys = staticKeys(t, opaqueSigner{testSigner(t, alg)})
			iss, err := issuer.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			leaf := newLeaf(t, testNow.Add(time.Hour))
			claims := baseClaims()
			raw, err := iss.Mint(context.Background(), &claims, leaf, 0)
			if err != nil {
				t.Fatal(err)
			}
			v := accesstoken.NewVerifier(testIssuerURL, iss.KeySet(), &accesstoken.Config{Audiences: []string{testAudience}, Now: fixedClock})
			if _, err := v.Verify(context.Background(), raw, leaf); err != nil {
				t.Errorf("Verify: %v", err)
			}
		})
	}
}
