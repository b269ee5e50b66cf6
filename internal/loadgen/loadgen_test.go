package loadgen

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/spiffe-sts/spiffe-sts/internal/fakeclock"
)

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// run runs Run in the background; the returned func waits for its result.
func runAsync(cfg Config, do DoFunc) func() (*Result, error) {
	type out struct {
		res *Result
		err error
	}
	c := make(chan out, 1)
	go func() {
		res, err := Run(context.Background(), cfg, do)
		c <- out{res, err}
	}()
	return func() (*Result, error) { o := <-c; return o.res, o.err }
}

// waitForWaiter waits until something waits on clock.
func waitForWaiter(t *testing.T, clock *fakeclock.Clock) {
	t.Helper()
	deadline := time.After(10 * time.Second) // a hang guard, not a measurement
	for {
		n, added := clock.Waiters()
		if n > 0 {
			return
		}
		select {
		case <-added:
		case <-deadline:
			t.Fatal("the scheduler never waited")
		}
	}
}

func TestOpenLoopSendsAtTheRate(t *testing.T) {
	clock := fakeclock.New(epoch)
	calls := make(chan time.Time)
	wait := runAsync(Config{Rate: 1000, Duration: 10 * time.Millisecond, Connections: 2, Clock: clock},
		func(ctx context.Context, conn, seq int) string {
			calls <- clock.Now()
			return ""
		})
	var sent []time.Time
	for i := range 10 {
		sent = append(sent, <-calls)
		if i < 9 {
			waitForWaiter(t, clock)
			clock.Advance(time.Millisecond)
		}
	}
	res, err := wait()
	if err != nil {
		t.Fatal(err)
	}
	for i, at := range sent {
		if want := epoch.Add(time.Duration(i) * time.Millisecond); !at.Equal(want) {
			t.Errorf("request %d sent at +%v, want +%v", i, at.Sub(epoch), want.Sub(epoch))
		}
	}
	if res.Requests != 10 || res.OK != 10 || res.Latency.Max() != 0 {
		t.Errorf("requests %d, ok %d, max latency %v; want 10, 10, 0", res.Requests, res.OK, res.Latency.Max())
	}
	if res.Elapsed != 9*time.Millisecond {
		t.Errorf("elapsed %v, want 9ms (the last answer)", res.Elapsed)
	}
}

// A server that stalls for 50 ms while requests keep arriving every 10 ms:
// each queued request's latency counts from its scheduled time.
func TestOpenLoopLatencyFromScheduledTime(t *testing.T) {
	clock := fakeclock.New(epoch)
	started, release := make(chan struct{}), make(chan struct{})
	var mu sync.Mutex
	var calledAt []time.Duration
	wait := runAsync(Config{Rate: 100, Requests: 6, Connections: 1, Clock: clock},
		func(ctx context.Context, conn, seq int) string {
			mu.Lock()
			calledAt = append(calledAt, clock.Now().Sub(epoch))
			mu.Unlock()
			if seq == 0 {
				close(started)
				<-release
			}
			return ""
		})
	<-started
	waitForWaiter(t, clock) // request 0 is in flight, the scheduler waits for request 1's time
	clock.Advance(50 * time.Millisecond)
	close(release)
	res, err := wait()
	if err != nil {
		t.Fatal(err)
	}
	if want := []time.Duration{0, 50, 50, 50, 50, 50}; len(calledAt) != 6 || calledAt[0] != want[0] || calledAt[5] != want[5]*time.Millisecond {
		t.Errorf("sent at %v, want request 0 at 0 and the rest at 50ms", calledAt)
	}
	// Latencies 50, 40, 30, 20, 10, 0 ms. A closed loop, or an open loop
	// timing from the send, would report the last five as 0.
	if got := res.Latency.Max(); got != 50*time.Millisecond {
		t.Errorf("max = %v, want 50ms", got)
	}
	if got := res.Latency.Quantile(0.5); got < 20*time.Millisecond || got > 20*time.Millisecond*129/128 {
		t.Errorf("p50 = %v, want 20ms", got)
	}
	if got := res.Latency.Mean(); got != 25*time.Millisecond {
		t.Errorf("mean = %v, want 25ms", got)
	}
}

func TestClosedLoopBoundsAndErrors(t *testing.T) {
	clock := fakeclock.New(epoch)
	res, err := Run(context.Background(), Config{Requests: 7, Connections: 3, Clock: clock},
		func(ctx context.Context, conn, seq int) string {
			if seq%3 == 0 {
				return "invalid_grant"
			}
			return ""
		})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 7 || res.OK != 4 || res.Errors["invalid_grant"] != 3 || len(res.Errors) != 1 {
		t.Errorf("requests %d, ok %d, errors %v; want 7, 4, invalid_grant:3", res.Requests, res.OK, res.Errors)
	}
}

func TestClosedLoopStopsAtDuration(t *testing.T) {
	clock := fakeclock.New(epoch)
	res, err := Run(context.Background(), Config{Duration: 10 * time.Millisecond, Connections: 1, Clock: clock},
		func(ctx context.Context, conn, seq int) string {
			clock.Advance(3 * time.Millisecond) // the request takes 3 ms
			return ""
		})
	if err != nil {
		t.Fatal(err)
	}
	// Started at 0, 3, 6 and 9 ms; none at 12.
	if res.Requests != 4 || res.Latency.Max() != 3*time.Millisecond || res.Elapsed != 12*time.Millisecond {
		t.Errorf("requests %d, max %v, elapsed %v; want 4, 3ms, 12ms", res.Requests, res.Latency.Max(), res.Elapsed)
	}
}

func TestRunNeedsABound(t *testing.T) {
	if _, err := Run(context.Background(), Config{Connections: 1}, nil); !errors.Is(err, ErrNoBound) {
		t.Errorf("err = %v, want ErrNoBound", err)
	}
}
