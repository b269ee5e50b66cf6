package accesstoken

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"strings"
	"sync"
	"time"
	"weak"

	"github.com/spiffe-sts/spiffe-sts/internal/boundedcache"
)

const (
	// DefaultCacheSize is the number of verified tokens a Verifier keeps
	// when Config.CacheSize is zero.
	DefaultCacheSize = 10_000
	// MaxCachedTokenLen is the length of the longest token the cache keeps;
	// longer tokens are verified in full on every call.
	MaxCachedTokenLen = 4096
)

// tokenCache remembers tokens that passed Verify, keyed by the raw token.
// Each entry keeps what a hit needs to re-check cheaply: the expiry and the
// certificate binding. Entries are immutable once stored.
type tokenCache struct {
	size int

	mu sync.RWMutex
	m  map[string]*cacheEntry
}

type cacheEntry struct {
	claims Claims // deep copy owned by the cache; never handed out
	// deadline is exp plus the verifier's leeway: a hit at or after it is
	// rejected like a cold Verify would.
	deadline time.Time
	// cnf is the decoded RFC 8705 x5t#S256 the token is bound to.
	cnf [sha256.Size]byte
	// leaf is the certificate the token was verified with. It is weak so
	// that the cache never keeps a connection's certificate alive; it only
	// lets a hit on the same certificate skip hashing it.
	leaf weak.Pointer[x509.Certificate]
}

func newTokenCache(size int) *tokenCache {
	return &tokenCache{size: size, m: make(map[string]*cacheEntry)}
}

// get looks raw up. ok is false on a miss; otherwise claims or err is the
// answer Verify gives for raw and peerLeaf, exactly as a cold Verify would.
func (c *tokenCache) get(raw string, peerLeaf *x509.Certificate, now time.Time) (claims *Claims, ok bool, err error) {
	c.mu.RLock()
	e := c.m[raw]
	c.mu.RUnlock()
	if e == nil {
		return nil, false, nil
	}
	if !now.Before(e.deadline) {
		c.remove(raw, e)
		return nil, true, &ExpiredError{Expiry: time.Unix(e.claims.Expiry, 0)}
	}
	// RFC 8705 §3.1: the token is only good on a connection authenticated
	// with the certificate it is bound to.
	if e.leaf.Value() != peerLeaf {
		sum := sha256.Sum256(peerLeaf.Raw)
		if subtle.ConstantTimeCompare(sum[:], e.cnf[:]) != 1 {
			return nil, true, ErrNotBound
		}
	}
	return e.claims.clone(), true, nil
}

// put stores a copy of claims, which Verify accepted for raw on a connection
// authenticated with peerLeaf. deadline is when the token stops being
// accepted.
func (c *tokenCache) put(raw string, claims *Claims, peerLeaf *x509.Certificate, deadline, now time.Time) {
	if len(raw) > MaxCachedTokenLen {
		return
	}
	e := &cacheEntry{claims: *claims.clone(), deadline: deadline, leaf: weak.Make(peerLeaf)}
	n, err := base64.RawURLEncoding.Decode(e.cnf[:], []byte(claims.Confirmation.X5TS256))
	if err != nil || n != len(e.cnf) || len(claims.Confirmation.X5TS256) != base64.RawURLEncoding.EncodedLen(sha256.Size) {
		return // cannot happen for a token bound to peerLeaf; never cache what a hit could not re-check
	}
	raw = strings.Clone(raw) // do not pin the buffer raw was sliced from
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[raw]; !ok && len(c.m) >= c.size {
		c.evictLocked(now)
	}
	c.m[raw] = e
}

// evictLocked makes room for one entry: among a few sampled at random, the
// expired ones or else the one expiring first, as it has the least use left
// (boundedcache.Evict).
func (c *tokenCache) evictLocked(now time.Time) {
	boundedcache.Evict(c.m, now, cacheDeadline)
}

func cacheDeadline(e *cacheEntry) time.Time { return e.deadline }

// remove deletes raw if it still maps to e.
func (c *tokenCache) remove(raw string, e *cacheEntry) {
	c.mu.Lock()
	if c.m[raw] == e {
		delete(c.m, raw)
	}
	c.mu.Unlock()
}

func (c *tokenCache) len() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.m)
}

// claimsBlock lets clone return claims with one or two audiences in a
// single allocation.
type claimsBlock struct {
	claims Claims
	aud    [2]string
}

// clone returns a deep copy of c: nothing in it is shared with c.
func (c *Claims) clone() *Claims {
	b := new(claimsBlock)
	b.claims = *c
	if n := len(c.Audience); c.Audience != nil {
		if n <= len(b.aud) {
			copy(b.aud[:], c.Audience)
			b.claims.Audience = b.aud[:n:n]
		} else {
			b.claims.Audience = append(Audience(nil), c.Audience...)
		}
	}
	b.claims.Actor = c.Actor.clone()
	b.claims.MayAct = c.MayAct.clone()
	if c.SubjectID != nil {
		id := *c.SubjectID
		b.claims.SubjectID = &id
	}
	return &b.claims
}

// clone returns a deep copy of the chain starting at a, in one allocation.
func (a *Actor) clone() *Actor {
	if a == nil {
		return nil
	}
	depth := 0
	for x := a; x != nil; x = x.Actor {
		depth++
	}
	chain := make([]Actor, depth)
	for i, x := 0, a; x != nil; i, x = i+1, x.Actor {
		chain[i].Subject = x.Subject
		if i > 0 {
			chain[i-1].Actor = &chain[i]
		}
	}
	return &chain[0]
}
