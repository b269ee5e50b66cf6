package boundedcache

import (
	"strconv"
	"testing"
	"time"
)

var t0 = time.Unix(1_800_000_000, 0)

// fill returns a map of n entries named k0..k(n-1) expiring at t0 plus
// their index in seconds, so k0 is expired at t0.
func fill(n int) map[string]time.Time {
	m := make(map[string]time.Time, n)
	for i := range n {
		m["k"+strconv.Itoa(i)] = t0.Add(time.Duration(i) * time.Second)
	}
	return m
}

func identity(t time.Time) time.Time { return t }

func TestEvict(t *testing.T) {
	tests := []struct {
		name        string
		overrideMap func(map[string]time.Time)
		overrideNow func(time.Time) time.Time
		expectGone  []string
		expectLen   int
	}{
		{
			// k1..k7 are valid at t0 and k0 is expired.
			name:       "baseline: the expired entry goes",
			expectGone: []string{"k0"},
			expectLen:  7,
		},
		{
			name:        "several expired: all sampled ones go",
			overrideNow: func(now time.Time) time.Time { return now.Add(3 * time.Second) },
			expectGone:  []string{"k0", "k1", "k2", "k3"},
			expectLen:   4,
		},
		{
			name:        "none expired: the one expiring first goes",
			overrideNow: func(now time.Time) time.Time { return now.Add(-time.Hour) },
			expectGone:  []string{"k0"},
			expectLen:   7,
		},
		{
			name:        "none expired, first expiry in the middle",
			overrideMap: func(m map[string]time.Time) { m["k0"] = t0.Add(time.Hour); m["k5"] = t0.Add(-30 * time.Minute) },
			overrideNow: func(now time.Time) time.Time { return now.Add(-time.Hour) },
			expectGone:  []string{"k5"},
			expectLen:   7,
		},
		{
			name:        "all expired",
			overrideNow: func(now time.Time) time.Time { return now.Add(time.Hour) },
			expectLen:   0,
		},
		{
			name:        "empty",
			overrideMap: func(m map[string]time.Time) { clear(m) },
			expectLen:   0,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := fill(Sample) // small enough that every entry is sampled
			if tt.overrideMap != nil {
				tt.overrideMap(m)
			}
			now := t0
			if tt.overrideNow != nil {
				now = tt.overrideNow(now)
			}
			before := len(m)
			n := Evict(m, now, identity)
			if len(m) != tt.expectLen || n != before-len(m) {
				t.Fatalf("Evict deleted %d, left %d entries, want %d left", n, len(m), tt.expectLen)
			}
			for _, k := range tt.expectGone {
				if _, ok := m[k]; ok {
					t.Errorf("%s is still there", k)
				}
			}
		})
	}
}

// TestEvictBounded fills a cache far past its bound, as callers sending
// new keys would: it never holds more than the bound, and each insert
// looks at no more than Sample entries.
func TestEvictBounded(t *testing.T) {
	const bound = 64
	m := map[string]time.Time{}
	now := t0
	for i := range 10_000 {
		now = now.Add(time.Millisecond)
		if len(m) >= bound {
			calls := 0
			Evict(m, now, func(exp time.Time) time.Time { calls++; return exp })
			if calls > Sample {
				t.Fatalf("insert %d: Evict looked at %d entries, want at most %d", i, calls, Sample)
			}
		}
		// Half the entries are already expired, half live for a second.
		exp := now.Add(time.Second)
		if i%2 == 0 {
			exp = now
		}
		m[strconv.Itoa(i)] = exp
		if len(m) > bound {
			t.Fatalf("insert %d: %d entries, bound %d", i, len(m), bound)
		}
	}
}

// TestEvictPrefersExpired checks, over many inserts into a cache half
// full of expired entries, that a sample holding an expired entry never
// costs a live one, and that one without deletes exactly one live entry.
func TestEvictPrefersExpired(t *testing.T) {
	m := fill(1000)
	now := t0.Add(500 * time.Second) // k0..k500 are expired
	countLive := func() int {
		n := 0
		for _, exp := range m {
			if now.Before(exp) {
				n++
			}
		}
		return n
	}
	sawBoth := [2]bool{}
	for range 200 {
		live := countLive()
		sampledExpired := false
		Evict(m, now, func(exp time.Time) time.Time {
			sampledExpired = sampledExpired || !now.Before(exp)
			return exp
		})
		lost := live - countLive()
		switch {
		case sampledExpired && lost != 0:
			t.Fatalf("%d live entries evicted from a sample holding an expired one", lost)
		case !sampledExpired && lost != 1:
			t.Fatalf("%d live entries evicted from a sample of live ones, want 1", lost)
		}
		if sampledExpired {
			sawBoth[0] = true
		} else {
			sawBoth[1] = true
		}
		m["new"+strconv.Itoa(len(m))+now.String()] = now.Add(time.Hour)
	}
	if !sawBoth[0] {
		t.Error("no sample held an expired entry")
	}
}

func BenchmarkEvict(b *testing.B) {
	m := fill(10_000)
	now := t0.Add(-time.Hour) // nothing expired: the worst case
	i := 0
	for b.Loop() {
		Evict(m, now, identity)
		m["n"+strconv.Itoa(i)] = t0
		i++
	}
}
