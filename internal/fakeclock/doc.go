// Package fakeclock is a clock for tests that moves only when the test
// advances it, so that code waiting for expiry, refresh or retry times is
// tested without waiting on the wall clock.
//
// A Clock satisfies the clock interfaces of the packages that take one
// (Now plus After), and its Now method is the func() time.Time that
// Config.Clock and Config.Now fields take:
//
//	clk := fakeclock.New(time.Now())
//	client, err := exchangeclient.New(ctx, exchangeclient.WithClock(clk), ...)
//	...
//	clk.Advance(time.Minute) // fires the timers due within the minute
package fakeclock
