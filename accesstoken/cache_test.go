package accesstoken_test

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/internal/testca"
)

// countingKeySet counts lookups: a Verify that looks no key up was answered
// from the cache.
type countingKeySet struct {
	accesstoken.KeySet
	lookups atomic.Int64
}

func (k *countingKeySet) LookupKey(ctx context.Context, kid string) (jwk.Key, error) {
	k.lookups.Add(1)
	return k.KeySet.LookupKey(ctx, kid)
}

// clock is a settable fake clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock(t time.Time) *clock { return &clock{t: t} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// reparse returns a distinct *x509.Certificate for the same certificate,
// as a new connection from the same workload would present.
func reparse(t testing.TB, cert *x509.Certificate) *x509.Certificate {
	t.Helper()
	again, err := x509.ParseCertificate(cert.Raw)
	if err != nil {
		t.Fatal(err)
	}
	return again
}

// TestCacheBinding checks that a cached token gets the answer a cold
// Verify would give: above all, it is never accepted on a connection
// authenticated with another certificate.
func TestCacheBinding(t *testing.T) {
	ctx := context.Background()
	ca := testca.New(t, "example.org")
	leaf := ca.SVID(t, subject, time.Hour).Certificates[0]
	// otherLeaf has the same SPIFFE ID: only the binding tells them apart.
	otherLeaf := ca.SVID(t, subject, time.Hour).Certificates[0]
	key := newKeyPair(t, "k1")
	raw := key.sign(t, accesstoken.Type, accesstoken.Claims{
		Issuer: issuerURL, Subject: subject, Audience: accesstoken.Audience{audience},
		Expiry: now.Add(time.Minute).Unix(), IssuedAt: now.Unix(), NotBefore: now.Unix(),
		ClientID: subject, Scope: "read",
		Confirmation: accesstoken.Confirmation{X5TS256: accesstoken.Thumbprint(leaf)},
	})

	tests := []struct {
		name           string
		overrideConfig func(*accesstoken.Config)
		// before runs between the first Verify (with leaf) and the second.
		before func(*clock)
		// peer is the certificate of the second Verify; leaf when nil.
		peer          func() *x509.Certificate
		expectErrIs   error
		expectExpired bool
		// expectLookups is the key lookups of both calls: 1 when the
		// second was a cache hit.
		expectLookups int64
		expectLen     int
	}{
		{name: "hit with the same certificate", expectLookups: 1, expectLen: 1},
		{name: "hit with another copy of the same certificate", peer: func() *x509.Certificate { return reparse(t, leaf) }, expectLookups: 1, expectLen: 1},
		{name: "hit with another certificate", peer: func() *x509.Certificate { return otherLeaf }, expectErrIs: accesstoken.ErrNotBound, expectLookups: 1, expectLen: 1},
		{name: "hit without a certificate", peer: func() *x509.Certificate { return nil }, expectErrIs: accesstoken.ErrNoCertificate, expectLookups: 1, expectLen: 1},
		{name: "expired since cached", before: func(c *clock) { c.Add(time.Minute) }, expectExpired: true, expectLookups: 1, expectLen: 0},
		{name: "expired since cached but within leeway", overrideConfig: func(c *accesstoken.Config) { c.Leeway = 5 * time.Second },
			before: func(c *clock) { c.Add(time.Minute + 4*time.Second) }, expectLookups: 1, expectLen: 1},
		{name: "expired since cached beyond leeway", overrideConfig: func(c *accesstoken.Config) { c.Leeway = 5 * time.Second },
			before: func(c *clock) { c.Add(time.Minute + 5*time.Second) }, expectExpired: true, expectLookups: 1, expectLen: 0},
		{name: "cache disabled", overrideConfig: func(c *accesstoken.Config) { c.CacheSize = -1 }, expectLookups: 2, expectLen: 0},
		{name: "cache disabled, another certificate", overrideConfig: func(c *accesstoken.Config) { c.CacheSize = -1 },
			peer: func() *x509.Certificate { return otherLeaf }, expectErrIs: accesstoken.ErrNotBound, expectLookups: 2, expectLen: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := newClock(now)
			keys := &countingKeySet{KeySet: key.publicSet(t, jwa.ES256())}
			cfg := accesstoken.Config{Audiences: []string{audience}, Now: clk.Now}
			if tt.overrideConfig != nil {
				tt.overrideConfig(&cfg)
			}
			v := accesstoken.NewVerifier(issuerURL, keys, &cfg)
			if _, err := v.Verify(ctx, raw, leaf); err != nil {
				t.Fatalf("first Verify: %v", err)
			}
			if tt.before != nil {
				tt.before(clk)
			}
			peer := leaf
			if tt.peer != nil {
				peer = tt.peer()
			}
			got, err := v.Verify(ctx, raw, peer)
			var expired *accesstoken.ExpiredError
			switch {
			case tt.expectExpired:
				if !errors.As(err, &expired) || !expired.Expiry.Equal(now.Add(time.Minute)) {
					t.Fatalf("err = %v, want *ExpiredError at %v", err, now.Add(time.Minute))
				}
			case tt.expectErrIs != nil:
				if !errors.Is(err, tt.expectErrIs) {
					t.Fatalf("err = %v, want %v", err, tt.expectErrIs)
				}
			case err != nil:
				t.Fatalf("unexpected error: %v", err)
			case got.Subject != subject || got.Scope != "read":
				t.Fatalf("claims = %+v", got)
			}
			if n := keys.lookups.Load(); n != tt.expectLookups {
				t.Errorf("key lookups = %d, want %d", n, tt.expectLookups)
			}
			if n := accesstoken.CacheLen(v); n != tt.expectLen {
				t.Errorf("cache holds %d tokens, want %d", n, tt.expectLen)
			}
		})
	}
}

// TestCacheNotFilledWithoutBinding checks that verifyWithoutBinding
// neither fills the cache nor is answered from it.
func TestCacheNotFilledWithoutBinding(t *testing.T) {
	ctx := context.Background()
	ca := testca.New(t, "example.org")
	leaf := ca.SVID(t, subject, time.Hour).Certificates[0]
	otherLeaf := ca.SVID(t, subject, time.Hour).Certificates[0]
	key := newKeyPair(t, "k1")
	keys := &countingKeySet{KeySet: key.publicSet(t, jwa.ES256())}
	v := accesstoken.NewVerifier(issuerURL, keys, &accesstoken.Config{Audiences: []string{audience}, Now: func() time.Time { return now }})
	raw := key.sign(t, accesstoken.Type, accesstoken.Claims{
		Issuer: issuerURL, Subject: subject, Audience: accesstoken.Audience{audience}, Expiry: now.Add(time.Minute).Unix(),
		Confirmation: accesstoken.Confirmation{X5TS256: accesstoken.Thumbprint(leaf)},
	})
	if _, err := verifyWithoutBinding(v, ctx, raw); err != nil {
		t.Fatal(err)
	}
	if n := accesstoken.CacheLen(v); n != 0 {
		t.Fatalf("verifyWithoutBinding cached %d tokens", n)
	}
	if _, err := v.Verify(ctx, raw, otherLeaf); !errors.Is(err, accesstoken.ErrNotBound) {
		t.Fatalf("Verify with another certificate: err = %v", err)
	}
	if _, err := v.Verify(ctx, raw, leaf); err != nil {
		t.Fatal(err)
	}
	if _, err := verifyWithoutBinding(v, ctx, raw); err != nil {
		t.Fatal(err)
	}
	if n := keys.lookups.Load(); n != 4 {
		t.Fatalf("key lookups = %d, want 4: verifyWithoutBinding used the cache", n)
	}
}

// TestCacheReturnsCopies checks that changing the claims Verify returns
// changes neither the cache nor what later calls get.
func TestCacheReturnsCopies(t *testing.T) {
	ctx := context.Background()
	ca := testca.New(t, "example.org")
	leaf := ca.SVID(t, subject, time.Hour).Certificates[0]
	key := newKeyPair(t, "k1")
	v := accesstoken.NewVerifier(issuerURL, key.publicSet(t, jwa.ES256()), &accesstoken.Config{Audiences: []string{audience}, Now: func() time.Time { return now }})
	for _, auds := range []accesstoken.Audience{{audience}, {audience, "b"}, {audience, "b", "c"}} {
		raw := key.sign(t, accesstoken.Type, accesstoken.Claims{
			Issuer: issuerURL, Subject: subject, Audience: auds, Expiry: now.Add(time.Minute).Unix(), Scope: "read",
			Confirmation: accesstoken.Confirmation{X5TS256: accesstoken.Thumbprint(leaf)},
			Actor:        &accesstoken.Actor{Subject: "spiffe://example.org/a", Actor: &accesstoken.Actor{Subject: "spiffe://example.org/b"}},
		})
		want := fmt.Sprint(auds, " [spiffe://example.org/a spiffe://example.org/b]")
		for i := range 3 { // a cold Verify, then hits
			got, err := v.Verify(ctx, raw, leaf)
			if err != nil {
				t.Fatal(err)
			}
			if s := fmt.Sprint(got.Audience, " ", got.ActorChain()); s != want || got.Subject != subject || got.Scope != "read" {
				t.Fatalf("call %d: got %s %s %s, want %s", i, s, got.Subject, got.Scope, want)
			}
			got.Subject, got.Scope = "mutated", "admin"
			got.Audience[0] = "mutated"
			got.Actor.Subject, got.Actor.Actor.Subject = "mutated", "mutated"
			got.Audience = append(got.Audience, "more")
		}
	}
}

// TestCacheEviction checks that the cache never holds more than CacheSize
// tokens, and that evicted tokens still verify.
func TestCacheEviction(t *testing.T) {
	ctx := context.Background()
	ca := testca.New(t, "example.org")
	leaf := ca.SVID(t, subject, time.Hour).Certificates[0]
	key := newKeyPair(t, "k1")
	clk := newClock(now)
	v := accesstoken.NewVerifier(issuerURL, key.publicSet(t, jwa.ES256()), &accesstoken.Config{Audiences: []string{audience}, Now: clk.Now, CacheSize: 3})
	var tokens []string
	for i := range 10 {
		tokens = append(tokens, key.sign(t, accesstoken.Type, accesstoken.Claims{
			Issuer: issuerURL, Subject: subject, Audience: accesstoken.Audience{audience},
			Expiry: now.Add(time.Duration(i+1) * time.Minute).Unix(), JWTID: fmt.Sprint(i),
			Confirmation: accesstoken.Confirmation{X5TS256: accesstoken.Thumbprint(leaf)},
		}))
	}
	for round := range 2 {
		for i, raw := range tokens {
			if _, err := v.Verify(ctx, raw, leaf); err != nil {
				t.Fatalf("round %d token %d: %v", round, i, err)
			}
			if n := accesstoken.CacheLen(v); n > 3 {
				t.Fatalf("cache holds %d tokens, limit 3", n)
			}
		}
	}
	// Tokens that cannot be cached are still verified.
	long := key.sign(t, accesstoken.Type, accesstoken.Claims{
		Issuer: issuerURL, Subject: subject, Audience: accesstoken.Audience{audience}, Expiry: now.Add(time.Minute).Unix(),
		Scope:        strings.Repeat("s ", accesstoken.MaxCachedTokenLen),
		Confirmation: accesstoken.Confirmation{X5TS256: accesstoken.Thumbprint(leaf)},
	})
	fresh := accesstoken.NewVerifier(issuerURL, key.publicSet(t, jwa.ES256()), &accesstoken.Config{Audiences: []string{audience}, Now: clk.Now})
	if _, err := fresh.Verify(ctx, long, leaf); err != nil {
		t.Fatal(err)
	}
	if n := accesstoken.CacheLen(fresh); n != 0 {
		t.Fatalf("a %d-byte token was cached", len(long))
	}
}

// TestCacheConcurrent verifies a few tokens from many goroutines, with the
// right and the wrong certificates and a cache too small for all of them;
// run it with -race.
func TestCacheConcurrent(t *testing.T) {
	ctx := context.Background()
	ca := testca.New(t, "example.org")
	key := newKeyPair(t, "k1")
	v := accesstoken.NewVerifier(issuerURL, key.publicSet(t, jwa.ES256()), &accesstoken.Config{Audiences: []string{audience}, CacheSize: 2})
	type fixture struct {
		raw  string
		leaf *x509.Certificate
	}
	var fixtures []fixture
	for i := range 4 {
		leaf := ca.SVID(t, subject, time.Hour).Certificates[0]
		fixtures = append(fixtures, fixture{leaf: leaf, raw: key.sign(t, accesstoken.Type, accesstoken.Claims{
			Issuer: issuerURL, Subject: fmt.Sprint(subject, i), Audience: accesstoken.Audience{audience},
			Expiry:       time.Now().Add(time.Hour).Unix(),
			Confirmation: accesstoken.Confirmation{X5TS256: accesstoken.Thumbprint(leaf)},
		})})
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				f := fixtures[(g+i)%len(fixtures)]
				other := fixtures[(g+i+1)%len(fixtures)]
				got, err := v.Verify(ctx, f.raw, f.leaf)
				if err != nil || got.Subject != fmt.Sprint(subject, (g+i)%len(fixtures)) {
					t.Errorf("Verify = %v, %v", got, err)
					return
				}
				got.Subject = "mutated"
				if _, err := v.Verify(ctx, f.raw, other.leaf); !errors.Is(err, accesstoken.ErrNotBound) {
					t.Errorf("Verify with another certificate: err = %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := accesstoken.CacheLen(v); n > 2 {
		t.Fatalf("cache holds %d tokens, limit 2", n)
	}
}

func TestActorChain(t *testing.T) {
	tests := []struct {
		name  string
		actor *accesstoken.Actor
		want  []string
	}{
		{name: "no actor"},
		{name: "one actor", actor: &accesstoken.Actor{Subject: "a"}, want: []string{"a"}},
		{name: "outermost first", actor: &accesstoken.Actor{Subject: "a", Actor: &accesstoken.Actor{Subject: "b", Actor: &accesstoken.Actor{Subject: "c"}}}, want: []string{"a", "b", "c"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &accesstoken.Claims{Subject: "s", Actor: tt.actor}
			if got := c.ActorChain(); fmt.Sprint(got) != fmt.Sprint(tt.want) || len(got) != len(tt.want) {
				t.Fatalf("ActorChain() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestContext(t *testing.T) {
	ctx := context.Background()
	if c, ok := accesstoken.FromContext(ctx); ok || c != nil {
		t.Fatalf("FromContext(empty) = %v, %v", c, ok)
	}
	if c, ok := accesstoken.FromContext(accesstoken.NewContext(ctx, nil)); ok || c != nil {
		t.Fatalf("FromContext(nil claims) = %v, %v", c, ok)
	}
	want := &accesstoken.Claims{Subject: subject}
	if c, ok := accesstoken.FromContext(accesstoken.NewContext(ctx, want)); !ok || c != want {
		t.Fatalf("FromContext = %v, %v", c, ok)
	}
}
