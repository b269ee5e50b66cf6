package exchange

import (
	"crypto"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// svidCache remembers JWT-SVIDs that passed full validation, so that a
// workload presenting the same JWT-SVID again (the SPIRE agent hands out
// the same one until half its life has passed) costs no signature check.
// A hit is used only while the token is within exp and nbf and while its
// signing authority is still in the trust domain's current JWT bundle with
// the same key; anything else validates from scratch. The audiences this
// server accepts never change while it runs, so they need no re-check.
type svidCache struct {
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

func newSVIDCache(max int) *svidCache {
	return &svidCache{max: max, entries: make(map[string]svidCacheEntry, max)}
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
	if k, ok := current.(interface{ Equal(crypto.PublicKey) bool }); !ok || !k.Equal(e.key) {
		return svidCacheEntry{}, false
	}
	return e, true
}

// put adds a validated token. When the cache is full it looks at a few
// entries (map iteration order is random) and drops the expired ones among
// them, or else the first: constant work per insert, and the cache stays
// within its bound whatever callers send.
func (c *svidCache) put(token string, e svidCacheEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= c.max {
		now := time.Now()
		var victim string
		sampled, dropped := 0, false
		for k, v := range c.entries {
			if !now.Before(v.expiry) {
				delete(c.entries, k)
				dropped = true
			} else if victim == "" {
				victim = k
			}
			if sampled++; sampled == evictionSample {
				break
			}
		}
		if !dropped {
			delete(c.entries, victim)
		}
	}
	c.entries[token] = e
}

// evictionSample is how many entries a full cache looks at per insert.
const evictionSample = 8

func (c *svidCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.entries)
}
