package exchange

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"math/big"
	"slices"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

func newKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestSVIDCache checks that a cached JWT-SVID validation is used only while
// the token is within its validity and its signing authority is still in
// the trust domain's current bundle with the same key.
func TestSVIDCache(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("example.org")
	id := spiffeid.RequireFromPath(td, "/web")
	key := newKey(t)
	now := time.Unix(1_800_000_000, 0)
	entry := svidCacheEntry{id: id, kid: "k1", key: key.Public(), expiry: now.Add(time.Minute)}
	edKey, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	otherEdKey, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name           string
		overrideBundle func(*jwtbundle.Bundle)
		overrideNow    func(time.Time) time.Time
		overrideEntry  func(*svidCacheEntry)
		expectHit      bool
	}{
		{name: "baseline", expectHit: true},
		{name: "expired", overrideNow: func(n time.Time) time.Time { return n.Add(time.Minute) }},
		{name: "not yet valid", overrideEntry: func(e *svidCacheEntry) { e.notBefore = now.Add(time.Second) }},
		{name: "authority removed from the bundle", overrideBundle: func(b *jwtbundle.Bundle) { b.RemoveJWTAuthority("k1") }},
		{name: "same kid, other key", overrideBundle: func(b *jwtbundle.Bundle) { _ = b.AddJWTAuthority("k1", newKey(t).Public()) }},
		{name: "same key decoded again into a new bundle", expectHit: true, overrideBundle: func(b *jwtbundle.Bundle) {
			_ = b.AddJWTAuthority("k1", &ecdsa.PublicKey{Curve: key.Curve, X: new(big.Int).Set(key.X), Y: new(big.Int).Set(key.Y)})
		}},
		{name: "Ed25519 authority, same key", expectHit: true,
			overrideBundle: func(b *jwtbundle.Bundle) { _ = b.AddJWTAuthority("k1", edKey) },
			overrideEntry:  func(e *svidCacheEntry) { e.key = slices.Clone(edKey) }},
		{name: "Ed25519 authority, other key",
			overrideBundle: func(b *jwtbundle.Bundle) { _ = b.AddJWTAuthority("k1", edKey) },
			overrideEntry:  func(e *svidCacheEntry) { e.key = otherEdKey }},
		{name: "other token", overrideEntry: func(e *svidCacheEntry) { e.kid = "k2" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bundle := jwtbundle.New(td)
			if err := bundle.AddJWTAuthority("k1", key.Public()); err != nil {
				t.Fatal(err)
			}
			if tt.overrideBundle != nil {
				tt.overrideBundle(bundle)
			}
			e := entry
			if tt.overrideEntry != nil {
				tt.overrideEntry(&e)
			}
			at := now
			if tt.overrideNow != nil {
				at = tt.overrideNow(now)
			}
			c := newSVIDCache(4, func() time.Time { return now })
			c.put("token", e)
			got, ok := c.get("token", bundle, at)
			if ok != tt.expectHit {
				t.Fatalf("hit = %v, want %v", ok, tt.expectHit)
			}
			if ok && got.id != id {
				t.Fatalf("id = %v", got)
			}
			if _, ok := c.get("another token", bundle, now); ok {
				t.Fatal("hit for a token never cached")
			}
		})
	}
}

func TestSVIDCacheBounded(t *testing.T) {
	c := newSVIDCache(8, time.Now)
	for i := range 100 {
		c.put(string(rune('a'+i%26))+string(rune(i)), svidCacheEntry{})
	}
	if n := c.len(); n > 8 {
		t.Fatalf("%d entries, bound is 8", n)
	}
}

// TestSVIDCacheEvictsExpired checks that a full cache drops the tokens
// expired by its clock rather than valid ones, and that storing a token
// it holds again evicts nothing.
func TestSVIDCacheEvictsExpired(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	clock := now
	c := newSVIDCache(4, func() time.Time { return clock })
	for i, ttl := range []time.Duration{time.Minute, 2 * time.Minute, 3 * time.Minute, 4 * time.Minute} {
		c.put(fmt.Sprint("t", i), svidCacheEntry{expiry: now.Add(ttl)})
	}
	c.put("t3", svidCacheEntry{expiry: now.Add(4 * time.Minute)})
	if n := c.len(); n != 4 {
		t.Fatalf("re-storing a cached token: %d entries, want 4", n)
	}
	clock = now.Add(90 * time.Second) // t0 has expired
	c.put("new", svidCacheEntry{expiry: now.Add(time.Hour)})
	if n := c.len(); n != 4 {
		t.Fatalf("%d entries, want 4", n)
	}
	if _, ok := c.entries["t0"]; ok {
		t.Error("the expired token was kept")
	}
	clock = now // nothing has expired: the one expiring first goes
	c.put("newer", svidCacheEntry{expiry: now.Add(time.Hour)})
	if _, ok := c.entries["t1"]; ok || c.len() != 4 {
		t.Errorf("entries %v; want t1, which expires first, evicted", c.entries)
	}
}

// BenchmarkSVIDCachePutFull measures storing a token in a full cache,
// which evicts one.
func BenchmarkSVIDCachePutFull(b *testing.B) {
	now := time.Unix(1_800_000_000, 0)
	c := newSVIDCache(svidCacheSize, func() time.Time { return now })
	keys := make([]string, 2*svidCacheSize)
	for i := range keys {
		keys[i] = fmt.Sprint("token-", i)
	}
	for i := range svidCacheSize {
		c.put(keys[i], svidCacheEntry{expiry: now.Add(time.Duration(i) * time.Second)})
	}
	i := 0
	for b.Loop() {
		c.put(keys[i%len(keys)], svidCacheEntry{expiry: now.Add(time.Duration(i%3600) * time.Second)})
		i++
	}
}
