// Package ratelimit keeps one token bucket (golang.org/x/time/rate) per
// key, for the per-caller rate limits of the token server: the key is the
// caller's authenticated SPIFFE ID, and each call to Allow charges one
// request under the limit that applies to the caller now.
//
// The number of keys is bounded: when the table is full, a few buckets
// are looked at and the idle ones dropped, those that have refilled to
// their burst (boundedcache's eviction rule, with the time a bucket is
// full again as its expiry). A full bucket is what a new key gets, so
// dropping an idle one changes nothing for its key; only when every
// sampled bucket is still refilling does the one closest to full go, and
// its key gets back the few tokens it lacked.
//
//	limits := ratelimit.New(ratelimit.DefaultMaxKeys, time.Now)
//	if ok, retry := limits.Allow(caller.ID.String(), ratelimit.Limit{PerSecond: 10, Burst: 20}); !ok {
//		// refuse: HTTP 429 with Retry-After: ceil(retry)
//	}
//
// Allow does not allocate once a key has its bucket.
package ratelimit
