package fakeclock

import (
	"sync"
	"time"
)

// Clock is a fake clock. It is safe for concurrent use.
type Clock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []waiter
	// added is closed, and replaced, whenever After adds a waiter.
	added chan struct{}
}

// waiter is one After call that has not fired.
type waiter struct {
	at time.Time
	c  chan time.Time
}

// New returns a clock that reads now until it is advanced.
func New(now time.Time) *Clock {
	return &Clock{now: now, added: make(chan struct{})}
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// After returns a channel that receives the clock's time once the clock
// has been advanced by d, like time.After; at once when d <= 0.
func (c *Clock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1) // buffered: firing never blocks
	if d <= 0 {
		ch <- c.now
		return ch
	}
	c.waiters = append(c.waiters, waiter{at: c.now.Add(d), c: ch})
	close(c.added)
	c.added = make(chan struct{})
	return ch
}

// Advance moves the clock forward by d and fires every After whose time
// has come. It panics if d is negative.
func (c *Clock) Advance(d time.Duration) {
	if d < 0 {
		panic("fakeclock: Advance with a negative duration")
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.moveLocked(c.now.Add(d))
}

// Set moves the clock forward to t and fires every After whose time has
// come, like Advance(t.Sub(Now())). It is for tests that step through
// absolute times. It panics if t is before the clock's time.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t.Before(c.now) {
		panic("fakeclock: Set to a time before Now")
	}
	c.moveLocked(t)
}

// moveLocked sets the clock to now and fires the waiters due by then.
// c.mu must be held.
func (c *Clock) moveLocked(now time.Time) {
	c.now = now
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if w.at.After(c.now) {
			kept = append(kept, w)
			continue
		}
		w.c <- c.now
	}
	clear(c.waiters[len(kept):])
	c.waiters = kept
}

// Waiters returns the number of After calls that have not fired, and a
// channel closed when After is next called: a test can wait on it for a
// goroutine to start waiting, rather than sleep.
func (c *Clock) Waiters() (n int, added <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.waiters), c.added
}
