package exchangeclient

import (
	"context"
	"fmt"
	"time"

	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
)

// flight is one token request for an entry, which callers join.
type flight struct {
	done     chan struct{}
	blocking bool // a caller waits; guarded by entry.mu
	tok      *heldToken
	err      error
}

// acquire starts a token request for e, or joins the one in progress.
// from, when set, is the previous certificate's token to re-bind, and
// noticed is when the new certificate was noticed.
func (t *Tokens) acquire(e *entry, from *heldToken, noticed time.Time, blocking bool) *flight {
	e.mu.Lock()
	defer e.mu.Unlock()
	if f := e.flight; f != nil {
		f.blocking = f.blocking || blocking
		return f
	}
	f := &flight{done: make(chan struct{}), blocking: blocking}
	t.mu.Lock()
	closed := t.closed
	if !closed {
		t.wg.Add(1)
	}
	t.mu.Unlock()
	if closed {
		f.err = ErrTokensClosed
		close(f.done)
		return f
	}
	e.flight = f
	go t.run(e, f, from, noticed)
	return f
}

// run performs the request of f.
func (t *Tokens) run(e *entry, f *flight, from *heldToken, noticed time.Time) {
	defer t.wg.Done()
	ctx, cancel := context.WithTimeout(t.life, t.c.timeout)
	defer cancel()

	var events [2]Event
	n := 0
	start := t.c.clock.Now()
	var h *heldToken
	var err error
	kind := EventObtained
	if from != nil && t.c.clock.Now().Before(from.expiry) {
		// RFC 8693 §2.1: the server re-issues the same grant (audience,
		// scope, act) bound to the certificate of this connection, with
		// an exp no later than the original's.
		h, err = t.request(ctx, e, Request{
			SubjectToken:       from.raw,
			SubjectTokenType:   protocol.TokenTypeAccessToken,
			RequestedTokenType: t.req.RequestedTokenType,
		})
		t.c.metrics.rebind(err)
		if err == nil {
			kind = EventRebound
		} else {
			events[n] = Event{Kind: EventFailed, Thumbprint: e.thumb, Latency: t.c.clock.Now().Sub(start), Err: fmt.Errorf("exchangeclient: re-binding the token: %w", err)}
			n++
		}
	}
	if h == nil {
		err = nil
		if prev := e.tok.Load(); prev != nil && t.c.clock.Now().Before(prev.expiry) {
			kind = EventRefreshed
		}
		req := t.req
		if t.subjectToken != nil {
			req.SubjectToken, err = t.subjectToken(ctx)
			if err != nil {
				err = fmt.Errorf("exchangeclient: subject token: %w", err)
			}
		}
		if err == nil {
			h, err = t.request(ctx, e, req)
		}
	}
	if err != nil {
		err = fmt.Errorf("exchangeclient: token for x5t#S256 %s: %w", e.thumb, err)
		kind = EventFailed
		t.c.metrics.refreshFailed()
	} else {
		e.tok.Store(h)
	}

	e.mu.Lock()
	e.flight = nil
	f.tok, f.err = h, err
	ev := Event{Kind: kind, Thumbprint: e.thumb, Latency: t.c.clock.Now().Sub(start), Blocking: f.blocking, Err: err}
	e.mu.Unlock()
	close(f.done)

	if !noticed.IsZero() {
		ev.Latency = t.c.clock.Now().Sub(noticed)
	}
	// Whichever request for the newest SVID ends first makes it current.
	t.promote(e)
	if h != nil {
		ev.Expiry = h.expiry
	}
	events[n] = ev
	n++
	e.poke()
	if t.events != nil {
		for _, ev := range events[:n] {
			t.events(ev)
		}
	}
}

// request sends req presenting e's SVID.
func (t *Tokens) request(ctx context.Context, e *entry, req Request) (*heldToken, error) {
	sent := t.c.clock.Now()
	tok, err := t.c.exchangeWith(ctx, e.sts, e.svid.ID, req)
	if err != nil {
		return nil, err
	}
	return e.hold(tok, sent), nil
}

// maintain refreshes e's token in the background and drops e at its
// certificate's NotAfter.
func (t *Tokens) maintain(e *entry) {
	defer t.wg.Done()
	clock := t.c.clock
	drop := clock.After(e.notAfter.Sub(clock.Now()))
	var failed failures
	for {
		next, ok := t.plan(e, failed)
		var fire <-chan time.Time
		if ok {
			fire = clock.After(next.Sub(clock.Now()))
		}
		select {
		case <-t.life.Done():
			return
		case <-drop:
			t.drop(e)
			return
		case <-e.wake:
			continue
		case <-fire:
		}
		if t.current.Load() != e {
			e.used.Store(false)
		}
		f := t.acquire(e, nil, time.Time{}, false)
		select {
		case <-t.life.Done():
			return
		case <-f.done:
		}
		if f.err != nil {
			failed = failures{n: failed.n + 1, last: clock.Now(), retryAfter: retryAfterOf(f.err)}
		} else {
			failed = failures{}
		}
	}
}

// failures are the background requests for an entry that have failed in
// a row.
type failures struct {
	n    int
	last time.Time // when the last one failed
	// retryAfter is how long the last one's temporarily_unavailable
	// answer asked the client to wait (Retry-After).
	retryAfter time.Duration
}

// plan returns when maintain should next request a token for e, and false
// when it should not until woken. After failures it backs off, and never
// asks sooner than the last answer's Retry-After.
func (t *Tokens) plan(e *entry, failed failures) (time.Time, bool) {
	e.mu.Lock()
	inFlight := e.flight != nil
	e.mu.Unlock()
	if inFlight {
		// The request in progress pokes e when it ends.
		return time.Time{}, false
	}
	active := t.current.Load() == e || e.used.Load()
	h := e.tok.Load()
	var next time.Time
	switch {
	case h != nil && h.refreshAt.IsZero():
		return time.Time{}, false
	case h != nil:
		next = h.refreshAt
	}
	if failed.n > 0 {
		delay := max(min(maxRetryDelay, time.Second<<min(failed.n-1, 5)), failed.retryAfter)
		if retry := failed.last.Add(delay); retry.After(next) {
			next = retry
		}
	}
	if !active && !t.c.clock.Now().Before(next) {
		// Due, but nothing uses the token: refresh when something does.
		return time.Time{}, false
	}
	return next, true
}

// poke makes maintain re-plan.
func (e *entry) poke() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}
