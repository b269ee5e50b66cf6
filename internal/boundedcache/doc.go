// Package boundedcache holds the eviction rule of the module's bounded
// caches (the verified-token cache of accesstoken and the JWT-SVID cache
// of exchange): when a cache is full, look at a few entries and drop the
// expired ones, or else the one that expires first. The work per insert
// is constant, and a cache stays within its bound whatever callers send.
//
// A cache keeps its own map and lock and calls Evict before adding to a
// full map:
//
//	if len(c.m) >= c.max {
//		boundedcache.Evict(c.m, now, func(e *entry) time.Time { return e.expiry })
//	}
//	c.m[key] = e
package boundedcache
