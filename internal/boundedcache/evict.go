package boundedcache

import "time"

// Sample is the most entries Evict looks at.
const Sample = 8

// Evict makes room in m for one more entry. It looks at up to Sample
// entries, picked at random (map iteration starts at a random position),
// and deletes those expired at now, expiry(v) not after now; when none of
// them is, it deletes the one expiring first, which has the least use
// left. It returns how many entries it deleted: at least one unless m is
// empty.
func Evict[M ~map[K]V, K comparable, V any](m M, now time.Time, expiry func(V) time.Time) int {
	var victim K
	var victimExpiry time.Time
	sampled, dropped := 0, 0
	for k, v := range m {
		exp := expiry(v)
		switch {
		case !now.Before(exp):
			delete(m, k)
			dropped++
		case dropped == 0 && (sampled == 0 || exp.Before(victimExpiry)):
			victim, victimExpiry = k, exp
		}
		if sampled++; sampled == Sample {
			break
		}
	}
	if dropped == 0 && sampled > 0 {
		delete(m, victim)
		dropped = 1
	}
	return dropped
}
