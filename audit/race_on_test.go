//go:build race

package audit_test

// raceEnabled is set when the race detector is on: sync.Pool then drops
// items at random, so allocation counts are not the real ones.
const raceEnabled = true
