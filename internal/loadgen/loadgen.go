package loadgen

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// Clock is the time source of Run; tests use internal/fakeclock.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// DoFunc sends request seq (0, 1, ...) on connection conn (0 to
// Connections-1; one worker uses one connection at a time) and returns ""
// on success or the error class: the OAuth error code (RFC 6749 §5.2) the
// server answered, or a class of its own such as "transport".
type DoFunc func(ctx context.Context, conn, seq int) string

// Config bounds and shapes a run. Duration or Requests (or both) must be
// set: the run stops by itself at the first bound reached.
type Config struct {
	// Connections is the number of workers, each with its own connection;
	// default 1.
	Connections int
	// Rate is the open loop's arrival rate in requests a second: request i
	// is scheduled at start + i/Rate and its latency counts from then.
	// 0 runs a closed loop: each worker sends as soon as it has its answer.
	Rate float64
	// Duration bounds the time in which requests are started (0: none).
	Duration time.Duration
	// Requests bounds the number of requests (0: none).
	Requests int
	// Clock defaults to the system clock.
	Clock Clock
}

// Result is what a run measured.
type Result struct {
	// Requests were completed, OK of them successfully.
	Requests, OK int
	// Errors counts the failed requests by error class.
	Errors map[string]int
	// Latency holds every completed request's latency: from its scheduled
	// time in the open loop, from its send in the closed loop.
	Latency *Histogram
	// Elapsed is from the start to the last answer.
	Elapsed time.Duration
}

// Throughput is the completed requests per second.
func (r *Result) Throughput() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Requests) / r.Elapsed.Seconds()
}

// ErrNoBound is returned by Run for a Config with neither Duration nor
// Requests.
var ErrNoBound = errors.New("loadgen: a run needs a Duration or a Requests bound")

type workerResult struct {
	hist   Histogram
	ok     int
	errors map[string]int
}

func (w *workerResult) record(code string, latency time.Duration) {
	w.hist.Record(latency)
	if code == "" {
		w.ok++
		return
	}
	if w.errors == nil {
		w.errors = map[string]int{}
	}
	w.errors[code]++
}

// Run runs the load until a bound of cfg is reached or ctx ends, waits for
// the requests in flight, and returns what it measured.
func Run(ctx context.Context, cfg Config, do DoFunc) (*Result, error) {
	if cfg.Duration <= 0 && cfg.Requests <= 0 {
		return nil, ErrNoBound
	}
	if cfg.Rate < 0 {
		return nil, errors.New("loadgen: negative rate")
	}
	if cfg.Connections <= 0 {
		cfg.Connections = 1
	}
	if cfg.Clock == nil {
		cfg.Clock = realClock{}
	}
	clock := cfg.Clock
	start := clock.Now()
	var deadline time.Time
	if cfg.Duration > 0 {
		deadline = start.Add(cfg.Duration)
	}
	workers := make([]workerResult, cfg.Connections)
	var wg sync.WaitGroup
	if cfg.Rate == 0 {
		var issued atomic.Int64
		for conn := range workers {
			w := &workers[conn]
			wg.Go(func() {
				for ctx.Err() == nil {
					seq := int(issued.Add(1) - 1)
					if cfg.Requests > 0 && seq >= cfg.Requests {
						return
					}
					sent := clock.Now()
					if !deadline.IsZero() && !sent.Before(deadline) {
						return
					}
					code := do(ctx, conn, seq)
					w.record(code, clock.Now().Sub(sent))
				}
			})
		}
	} else {
		type job struct {
			seq       int
			scheduled time.Time
		}
		// The queue holds what is due but not yet sent; the scheduler
		// blocking on it changes nothing measured, since latency counts
		// from the scheduled time.
		jobs := make(chan job, 4096)
		for conn := range workers {
			w := &workers[conn]
			wg.Go(func() {
				for j := range jobs {
					if ctx.Err() != nil {
						continue
					}
					code := do(ctx, conn, j.seq)
					w.record(code, clock.Now().Sub(j.scheduled))
				}
			})
		}
		perRequest := float64(time.Second) / cfg.Rate
	schedule:
		for seq := 0; cfg.Requests == 0 || seq < cfg.Requests; seq++ {
			at := start.Add(time.Duration(float64(seq) * perRequest))
			if !deadline.IsZero() && !at.Before(deadline) {
				break
			}
			if d := at.Sub(clock.Now()); d > 0 {
				select {
				case <-clock.After(d):
				case <-ctx.Done():
					break schedule
				}
			}
			select {
			case jobs <- job{seq, at}:
			case <-ctx.Done():
				break schedule
			}
		}
		close(jobs)
	}
	wg.Wait()
	res := &Result{Errors: map[string]int{}, Latency: &Histogram{}, Elapsed: clock.Now().Sub(start)}
	for i := range workers {
		w := &workers[i]
		res.Latency.Merge(&w.hist)
		res.OK += w.ok
		for code, n := range w.errors {
			res.Errors[code] += n
		}
	}
	res.Requests = int(res.Latency.Count())
	return res, nil
}
