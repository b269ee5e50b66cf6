package exchange

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/spiffe-sts/spiffe-sts/internal/boundedcache"
)

// svidCache remembers JWT-SVIDs that passed full validation, so that a
// workload presenting the same JWT-SVID again (the SPIRE agent hands out
// the same one until half its life has passed) costs no signature check.
// A hit is used only while the token is within exp and nbf and while its
// signing authority is still in the trust domain's current JWT bundle with
// the same key; anything else validates from scratch. The audiences this
// server accepts never change while it runs, so they need no re-check.
type svidCache struct {
	now     func() time.Time
	mu      sync.RWMutex
	max     int
	entries map[string]svidCacheEntry
}

type svidCacheEntry struct {
	id        spiffeid.ID
	audience  []string
	kid       string
	key       crypto.PublicKey
	expiry    time.Time
	notBefore time.Time
}

// svidCacheSize bounds the cache: at about 1 KiB a token and its entry,
// some 4 MiB.
const svidCacheSize = 4096

// newSVIDCache returns a cache of at most max tokens that reads the time
// from now (exchange.Config.Clock) to find expired ones.
func newSVIDCache(max int, now func() time.Time) *svidCache {
	return &svidCache{now: now, max: max, entries: make(map[string]svidCacheEntry, max)}
}

// get returns a cached token valid at now and still signed by an
// authority of its trust domain's bundle in bundles.
func (c *svidCache) get(token string, bundles jwtbundle.Source, now time.Time) (svidCacheEntry, bool) {
	c.mu.RLock()
	e, ok := c.entries[token]
	c.mu.RUnlock()
	if !ok || !now.Before(e.expiry) || now.Before(e.notBefore) {
		return svidCacheEntry{}, false
	}
	bundle, err := bundles.GetJWTBundleForTrustDomain(e.id.TrustDomain())
	if err != nil {
		return svidCacheEntry{}, false
	}
	current, ok := bundle.FindJWTAuthority(e.kid)
	if !ok {
		return svidCacheEntry{}, false
	}
	if !sameKey(current, e.key) {
		return svidCacheEntry{}, false
	}
	return e, true
}

// sameKey reports whether the bundle's current authority is the key the
// token was validated with. A bundle source hands out the same key value
// until the bundle changes (workloadapi.BundleSource copies its map, not
// the keys), so the pointer comparison answers almost every lookup
// without comparing the coordinates; a new bundle with the same key is
// still found equal by the key's Equal method.
func sameKey(current, cached crypto.PublicKey) bool {
	switch k := current.(type) {
	case *ecdsa.PublicKey:
		if c, ok := cached.(*ecdsa.PublicKey); ok && k == c {
			return true
		}
	case *rsa.PublicKey:
		if c, ok := cached.(*rsa.PublicKey); ok && k == c {
			return true
		}
	}
	k, ok := current.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(cached)
}

// put adds a validated token. When the cache is full it drops, among a
// few entries sampled at random, the expired ones or else the one expiring
// first (boundedcache.Evict): constant work per insert, and the cache stays
// within its bound whatever callers send.
func (c *svidCache) put(token string, e svidCacheEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.entries[token]; !ok && len(c.entries) >= c.max {
		boundedcache.Evict(c.entries, c.now(), svidCacheExpiry)
	}
	c.entries[token] = e
}

func svidCacheExpiry(e svidCacheEntry) time.Time { return e.expiry }

func (c *svidCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.entries)
}
