package loadgen

import (
	"testing"
	"time"
)

func TestHistogramQuantiles(t *testing.T) {
	var h Histogram
	for i := 1; i <= 1000; i++ {
		h.Record(time.Duration(i) * time.Microsecond)
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{
		{0, time.Microsecond},
		{0.5, 500 * time.Microsecond},
		{0.9, 900 * time.Microsecond},
		{0.99, 990 * time.Microsecond},
		{1, 1000 * time.Microsecond},
	} {
		got := h.Quantile(tc.q)
		// Never below the true value, at most 1/128 above it.
		if got < tc.want || float64(got) > float64(tc.want)*(1+1.0/subCount) {
			t.Errorf("Quantile(%v) = %v, want %v within 0.8%% above", tc.q, got, tc.want)
		}
	}
	if h.Max() != time.Millisecond || h.Count() != 1000 {
		t.Errorf("Max, Count = %v, %d", h.Max(), h.Count())
	}
	if got := h.Mean(); got != 500500*time.Nanosecond {
		t.Errorf("Mean = %v", got)
	}
}

func TestHistogramSmallValuesExact(t *testing.T) {
	var h Histogram
	for _, v := range []time.Duration{0, 1, 2, 3, 127} {
		h.Record(v)
	}
	h.Record(-5) // counts as 0
	if got := h.Quantile(0.5); got != 1 {
		t.Errorf("p50 = %v, want 1ns", got)
	}
	if got := h.Quantile(1); got != 127 {
		t.Errorf("p100 = %v, want 127ns", got)
	}
}

func TestHistogramMerge(t *testing.T) {
	var a, b, empty Histogram
	a.Record(time.Millisecond)
	b.Record(3 * time.Millisecond)
	b.Record(2 * time.Millisecond)
	a.Merge(&b)
	a.Merge(&empty)
	if a.Count() != 3 || a.Max() != 3*time.Millisecond {
		t.Fatalf("Count, Max = %d, %v", a.Count(), a.Max())
	}
	if got := a.Quantile(0.5); got < 2*time.Millisecond || got > 2*time.Millisecond*129/128 {
		t.Errorf("p50 = %v", got)
	}
	if got := empty.Quantile(0.99); got != 0 {
		t.Errorf("empty p99 = %v", got)
	}
}

func TestBucketBounds(t *testing.T) {
	// Every value lies in a bucket whose upper bound is at or above it and
	// within 1/128 of it.
	for _, v := range []uint64{0, 127, 128, 129, 255, 256, 1000, 123456789, 1 << 40, 1<<63 - 1} {
		ub := upperBound(bucket(v))
		if ub < v || (v >= subCount && float64(ub-v) > float64(v)/subCount) {
			t.Errorf("value %d: bucket %d upper bound %d", v, bucket(v), ub)
		}
	}
}
