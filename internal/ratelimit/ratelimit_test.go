package ratelimit_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/spiffe-sts/spiffe-sts/internal/fakeclock"
	"github.com/spiffe-sts/spiffe-sts/internal/ratelimit"
)

var t0 = time.Unix(1_800_000_000, 0)

const (
	alice = "spiffe://example.org/alice"
	bob   = "spiffe://example.org/bob"
)

// allowN charges key n times and fails unless every charge is allowed.
func allowN(t *testing.T, l *ratelimit.Limiter, key string, limit ratelimit.Limit, n int) {
	t.Helper()
	for i := range n {
		if ok, retry := l.Allow(key, limit); !ok {
			t.Fatalf("%s: request %d of %d refused (retry after %v)", key, i+1, n, retry)
		}
	}
}

// refused fails unless the next charge of key is refused, and returns
// the delay it asks for.
func refused(t *testing.T, l *ratelimit.Limiter, key string, limit ratelimit.Limit) time.Duration {
	t.Helper()
	ok, retry := l.Allow(key, limit)
	if ok {
		t.Fatalf("%s: allowed over its limit %+v", key, limit)
	}
	return retry
}

func TestAllowBurstThenRate(t *testing.T) {
	clk := fakeclock.New(t0)
	l := ratelimit.New(0, clk.Now)
	limit := ratelimit.Limit{PerSecond: 2, Burst: 3}

	allowN(t, l, alice, limit, 3)
	if retry := refused(t, l, alice, limit); retry != 500*time.Millisecond {
		t.Fatalf("retry after %v, want 500ms (one token at 2/s)", retry)
	}
	// Another key has its own bucket.
	allowN(t, l, bob, limit, 3)

	clk.Advance(499 * time.Millisecond)
	if retry := refused(t, l, alice, limit); retry != time.Millisecond {
		t.Fatalf("retry after %v, want 1ms", retry)
	}
	clk.Advance(time.Millisecond)
	allowN(t, l, alice, limit, 1)
	refused(t, l, alice, limit)

	// Idle long enough, the bucket is full again, never fuller.
	clk.Advance(time.Hour)
	allowN(t, l, alice, limit, 3)
	refused(t, l, alice, limit)
}

func TestZeroLimitAllowsAndKeepsNoBucket(t *testing.T) {
	l := ratelimit.New(0, fakeclock.New(t0).Now)
	allowN(t, l, alice, ratelimit.Limit{}, 1000)
	if n := l.Len(); n != 0 {
		t.Fatalf("Len() = %d, want 0", n)
	}
}

func TestLimitChangeKeepsTokens(t *testing.T) {
	clk := fakeclock.New(t0)
	l := ratelimit.New(0, clk.Now)
	allowN(t, l, alice, ratelimit.Limit{PerSecond: 1, Burst: 10}, 8)

	// A lower burst caps what is left: 2 tokens, under a burst of 5.
	lower := ratelimit.Limit{PerSecond: 1, Burst: 5}
	allowN(t, l, alice, lower, 2)
	refused(t, l, alice, lower)

	// A higher rate refills faster at once.
	faster := ratelimit.Limit{PerSecond: 100, Burst: 5}
	if retry := refused(t, l, alice, faster); retry != 10*time.Millisecond {
		t.Fatalf("retry after %v, want 10ms at 100/s", retry)
	}
	clk.Advance(10 * time.Millisecond)
	allowN(t, l, alice, faster, 1)
}

func TestSlowRateRetryAfter(t *testing.T) {
	l := ratelimit.New(0, fakeclock.New(t0).Now)
	limit := ratelimit.Limit{PerSecond: 0.1, Burst: 1}
	allowN(t, l, alice, limit, 1)
	if retry := refused(t, l, alice, limit); retry != 10*time.Second {
		t.Fatalf("retry after %v, want 10s at 0.1/s", retry)
	}
}

// TestMaxKeysEvictsIdleBuckets fills the table and checks that a new key
// displaces an idle bucket, never one still refilling while an idle one
// is there, and that the number of buckets stays bounded.
func TestMaxKeysEvictsIdleBuckets(t *testing.T) {
	clk := fakeclock.New(t0)
	const maxKeys = 4
	l := ratelimit.New(maxKeys, clk.Now)
	limit := ratelimit.Limit{PerSecond: 1, Burst: 2}

	// Three buckets drained at t0: full again at t0+2s.
	for i := range maxKeys - 1 {
		allowN(t, l, "busy"+strconv.Itoa(i), limit, 2)
	}
	// One touched once, earlier: full again after 1s.
	allowN(t, l, alice, limit, 1)
	clk.Advance(1500 * time.Millisecond)

	// alice's bucket is full again (idle); the others are not: a new key
	// evicts alice's.
	allowN(t, l, bob, limit, 2)
	if n := l.Len(); n != maxKeys {
		t.Fatalf("Len() = %d, want %d", n, maxKeys)
	}
	for i := range maxKeys - 1 {
		// Still held: 1.5 tokens, where a new bucket would have 2.
		allowN(t, l, "busy"+strconv.Itoa(i), limit, 1)
		refused(t, l, "busy"+strconv.Itoa(i), limit)
	}
	if n := l.Len(); n != maxKeys {
		t.Fatalf("Len() = %d after the busy keys, want %d", n, maxKeys)
	}

	// Many more keys than the bound: the table never grows past it.
	for i := range 100 {
		clk.Advance(10 * time.Second)
		allowN(t, l, "churn"+strconv.Itoa(i), limit, 1)
		if n := l.Len(); n > maxKeys {
			t.Fatalf("Len() = %d, over the bound %d", n, maxKeys)
		}
	}
}

// BenchmarkAllow is the warm path of the token endpoint: a caller that
// has its bucket, under its limit. It must not allocate.
func BenchmarkAllow(b *testing.B) {
	l := ratelimit.New(0, nil)
	limit := ratelimit.Limit{PerSecond: 1e9, Burst: 1 << 30}
	l.Allow(alice, limit)
	b.ReportAllocs()
	for b.Loop() {
		if ok, _ := l.Allow(alice, limit); !ok {
			b.Fatal("refused")
		}
	}
}

func TestAllowDoesNotAllocate(t *testing.T) {
	l := ratelimit.New(0, nil)
	limit := ratelimit.Limit{PerSecond: 1e9, Burst: 1 << 30}
	l.Allow(alice, limit)
	if n := testing.AllocsPerRun(1000, func() { l.Allow(alice, limit) }); n != 0 {
		t.Fatalf("Allow allocates %v times on the warm path, want 0", n)
	}
}
