package exchangeclient

import "time"

// Clock is the time source of a Client and its Tokens: token expiry, the
// refresh and retry schedule, the drop of a token at its certificate's
// NotAfter and the polling of the X509Source all read it. The default is
// the system clock; see WithClock.
type Clock interface {
	// Now returns the current time.
	Now() time.Time
	// After returns a channel that receives the time once d has passed,
	// at once when d <= 0, like time.After.
	After(d time.Duration) <-chan time.Time
}

// systemClock is the Clock of the time package.
type systemClock struct{}

func (systemClock) Now() time.Time                         { return time.Now() }
func (systemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
