package loadgen

import (
	"math"
	"math/bits"
	"time"
)

// subBits sets the histogram's precision: 2^subBits buckets per power of
// two, so a recorded value is reported within 1/2^subBits (0.8%) above it.
const subBits = 7

const subCount = 1 << subBits

// Histogram is an HDR-style log-linear histogram of durations in
// nanoseconds: exact below 128 ns, then 128 buckets per power of two. It
// has a fixed size (64 KiB), needs no configuration, and two merge by
// adding counts. The zero value is empty and ready to use; it is not safe
// for concurrent use (Run keeps one per worker and merges them).
type Histogram struct {
	counts   []uint64
	n        uint64
	min, max int64
	sum      float64
}

// bucket returns the index of the bucket holding v (v >= 0).
func bucket(v uint64) int {
	if v < subCount {
		return int(v)
	}
	e := bits.Len64(v) - subBits - 1 // v>>e is in [subCount, 2*subCount)
	return (e+1)*subCount + int(v>>e) - subCount
}

// upperBound is the largest value in bucket i.
func upperBound(i int) uint64 {
	if i < subCount {
		return uint64(i)
	}
	e := i/subCount - 1
	sub := uint64(i%subCount + subCount)
	return (sub+1)<<e - 1
}

// Record adds one duration; negative ones count as zero.
func (h *Histogram) Record(d time.Duration) {
	v := int64(d)
	if v < 0 {
		v = 0
	}
	if h.counts == nil {
		h.counts = make([]uint64, (64-subBits+1)*subCount)
	}
	h.counts[bucket(uint64(v))]++
	if h.n == 0 || v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
	h.n++
	h.sum += float64(v)
}

// Merge adds o's counts to h.
func (h *Histogram) Merge(o *Histogram) {
	if o.n == 0 {
		return
	}
	if h.counts == nil {
		h.counts = make([]uint64, len(o.counts))
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	if h.n == 0 || o.min < h.min {
		h.min = o.min
	}
	h.max = max(h.max, o.max)
	h.n += o.n
	h.sum += o.sum
}

// Count is the number of recorded values.
func (h *Histogram) Count() uint64 { return h.n }

// Max is the largest recorded value, exactly.
func (h *Histogram) Max() time.Duration { return time.Duration(h.max) }

// Mean is the mean of the recorded values.
func (h *Histogram) Mean() time.Duration {
	if h.n == 0 {
		return 0
	}
	return time.Duration(h.sum / float64(h.n))
}

// Quantile returns the value at quantile q in [0, 1]: the upper bound of
// the bucket holding the ceil(q*n)-th smallest value (never above Max), so
// within 0.8% above the true value. It is 0 when h is empty.
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = min(max(rank, 1), h.n)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return time.Duration(min(max(int64(upperBound(i)), h.min), h.max))
		}
	}
	return time.Duration(h.max)
}
