package ratelimit

import (
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/spiffe-sts/spiffe-sts/internal/boundedcache"
)

// DefaultMaxKeys bounds the keys of a Limiter made with a maxKeys of zero:
// some 200 bytes each, about 13 MiB when full.
const DefaultMaxKeys = 1 << 16

// Limit is a token bucket's rate and size: PerSecond requests a second
// on average, Burst at once. The zero Limit means no limit.
type Limit struct {
	// PerSecond is the refill rate, in requests a second; positive.
	PerSecond float64
	// Burst is the bucket's size: the requests a key may make at once
	// after being idle; at least 1.
	Burst int
}

// IsZero reports whether l is the zero Limit: no limit.
func (l Limit) IsZero() bool { return l == Limit{} }

// Limiter holds a token bucket per key. It is safe for concurrent use.
type Limiter struct {
	now     func() time.Time
	maxKeys int

	mu      sync.Mutex
	buckets map[string]*bucket
}

// bucket is one key's token bucket and the limit it was last charged
// under.
type bucket struct {
	limit  Limit
	tokens *rate.Limiter
}

// fullAt is when b is full again, idle from then on: now or earlier when
// it is full at now. Only eviction asks, so a charge is one call into
// the token bucket.
func (b *bucket) fullAt(now time.Time) time.Time {
	return now.Add(untilTokens(b.tokens.TokensAt(now), float64(b.limit.Burst), b.limit.PerSecond))
}

// New returns a Limiter holding at most maxKeys buckets (DefaultMaxKeys
// when zero or negative), reading the time from now (time.Now when nil).
func New(maxKeys int, now func() time.Time) *Limiter {
	if maxKeys <= 0 {
		maxKeys = DefaultMaxKeys
	}
	if now == nil {
		now = time.Now
	}
	return &Limiter{now: now, maxKeys: maxKeys, buckets: make(map[string]*bucket)}
}

// Allow charges one request of key under limit. It returns true when the
// key's bucket had a token; otherwise false and how long until it has
// one (at least a nanosecond), and nothing is charged. A zero limit
// allows everything and keeps no bucket. When the limit of a key changes
// (a policy reload), its bucket keeps its tokens, capped at the new burst,
// and refills at the new rate.
func (l *Limiter) Allow(key string, limit Limit) (bool, time.Duration) {
	if limit.IsZero() {
		return true, 0
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	switch {
	case !ok:
		if len(l.buckets) >= l.maxKeys {
			boundedcache.Evict(l.buckets, now, func(b *bucket) time.Time { return b.fullAt(now) })
		}
		b = &bucket{limit: limit, tokens: rate.NewLimiter(rate.Limit(limit.PerSecond), limit.Burst)}
		l.buckets[key] = b
	case b.limit != limit:
		b.tokens.SetLimitAt(now, rate.Limit(limit.PerSecond))
		b.tokens.SetBurstAt(now, limit.Burst)
		b.limit = limit
	}
	if !b.tokens.AllowN(now, 1) {
		return false, untilTokens(b.tokens.TokensAt(now), 1, limit.PerSecond)
	}
	return true, 0
}

// untilTokens is how long a bucket holding have tokens, refilling at
// perSecond, takes to hold want: at least a nanosecond when have < want.
func untilTokens(have, want, perSecond float64) time.Duration {
	if have >= want {
		return 0
	}
	secs := (want - have) / perSecond
	if secs >= math.MaxInt64/float64(time.Second) {
		return math.MaxInt64
	}
	// Rounded to the nanosecond, not up: the float error of a bucket
	// refilled over a while would otherwise add one.
	return max(time.Duration(math.Round(secs*float64(time.Second))), 1)
}

// Len returns the number of buckets held.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}
