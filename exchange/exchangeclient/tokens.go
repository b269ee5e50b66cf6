package exchangeclient

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
)

// Errors of Tokens. They are wrapped with detail; match them with
// errors.Is.
var (
	// ErrUnknownCertificate is returned for a certificate that is not an
	// X509-SVID the Tokens has seen from its source: no token can be bound
	// to a certificate whose private key the workload does not hold.
	ErrUnknownCertificate = errors.New("exchangeclient: the certificate is not an X509-SVID of this workload")
	// ErrCertificateExpired is returned for a certificate past its
	// NotAfter: the STS binds no token to it (RFC 8705 §3).
	ErrCertificateExpired = errors.New("exchangeclient: the certificate has expired")
	// ErrTokensClosed is returned after Tokens.Close.
	ErrTokensClosed = errors.New("exchangeclient: tokens are closed")
)

const (
	// pollInterval is how often Tokens reads the source's SVID, besides
	// waking on the source's Updated channel when it has one.
	pollInterval = time.Second
	// maxRetryDelay caps the backoff between failed background requests.
	maxRetryDelay = 30 * time.Second
	// maxSkew is the most a token's usable life is shortened, so that a
	// call does not arrive at the resource server just after "exp".
	maxSkew = time.Second
)

// EventKind says what an Event reports.
type EventKind int

// The kinds of Event.
const (
	// EventObtained: a token was obtained with the original grant for a
	// certificate that had no usable token: the first one, the one for a
	// new certificate when re-binding failed, or one after the previous
	// expired.
	EventObtained EventKind = iota + 1
	// EventRefreshed: a usable token was replaced, with the original grant,
	// before it expired.
	EventRefreshed
	// EventRebound: the grant was re-bound to a new certificate (RFC 8693
	// token exchange of the previous certificate's token).
	EventRebound
	// EventFailed: a token request failed; Err says why.
	EventFailed
	// EventDropped: the certificate passed its NotAfter and its token was
	// dropped.
	EventDropped
)

// String returns the kind's name.
func (k EventKind) String() string {
	switch k {
	case EventObtained:
		return "obtained"
	case EventRefreshed:
		return "refreshed"
	case EventRebound:
		return "rebound"
	case EventFailed:
		return "failed"
	case EventDropped:
		return "dropped"
	default:
		return fmt.Sprintf("EventKind(%d)", int(k))
	}
}

// Event reports something Tokens did; see WithEvents. It never carries a
// token.
type Event struct {
	Kind EventKind
	// Thumbprint is the RFC 8705 §3.1 x5t#S256 of the certificate the
	// token is, or was to be, bound to.
	Thumbprint string
	// Expiry is when the token obtained expires; zero for EventFailed and
	// EventDropped.
	Expiry time.Time
	// Latency is, for EventRebound and for the EventObtained or
	// EventFailed that ends a rotation, the time from noticing the new
	// X509-SVID to holding (or giving up on) its token; otherwise the
	// duration of the token request.
	Latency time.Duration
	// Blocking reports that a caller waited for this request because no
	// usable token was kept for its certificate.
	Blocking bool
	// Err is why the request failed; a protocol.Error when the STS
	// refused it.
	Err error
}

// Tokens keeps bound access tokens for one Request (audience, scopes), one
// per client certificate. It is safe for concurrent use.
//
// Tokens watches the client's X509Source. When the X509-SVID changes it
// obtains a token bound to the new certificate at once, by re-binding the
// current token (RFC 8693 §2.1, subject_token_type
// urn:ietf:params:oauth:token-type:access_token, over a connection that
// presents the new certificate), or with the original grant if that fails.
// It refreshes every kept token in the background once two thirds of its
// lifetime have passed, so Token waits only when no usable token is kept.
//
// Tokens for certificates that are no longer current are kept, with their
// SVID, until the certificate's NotAfter, so that calls on connections
// established with an older certificate keep working. They are refreshed
// over STS connections presenting that certificate, but only while they
// are being used. A token bound to a certificate never outlives it.
type Tokens struct {
	c            *Client
	req          Request
	events       func(Event)
	subjectToken func(context.Context) (string, error)

	// entries maps each kept certificate to its entry. It is replaced, not
	// modified, under mu, so Token reads it without a lock.
	entries atomic.Pointer[map[*x509.Certificate]*entry]
	// current is the entry whose certificate new connections present: the
	// source's newest SVID once Tokens has tried to obtain its token.
	current atomic.Pointer[entry]

	// life is Tokens' own lifetime, not a caller's: background requests
	// derive from it and Close cancels it.
	life context.Context
	stop context.CancelFunc
	wg   sync.WaitGroup

	mu sync.Mutex // guards the fields below and writes to entries
	// latest is the entry of the newest SVID noticed; it becomes current
	// when its first token request ends.
	latest  *entry
	closed  bool
	closers []func()

	closeOnce sync.Once
}

// entry is one certificate and the token bound to it.
type entry struct {
	owner    *Tokens
	svid     *x509svid.SVID
	leaf     *x509.Certificate
	thumb    string
	notAfter time.Time
	tlsCert  *tls.Certificate
	// sts sends token requests presenting exactly this SVID.
	sts *stsConn

	tok     atomic.Pointer[heldToken]
	used    atomic.Bool // Token returned the token since the last refresh
	dropped atomic.Bool
	wake    chan struct{} // makes maintain re-plan; buffered

	mu     sync.Mutex
	flight *flight // the request in progress, nil when none
}

// heldToken is an issued token and its schedule. It is never modified.
type heldToken struct {
	raw    string
	header string // "Bearer " + raw, so attaching it allocates nothing
	expiry time.Time
	// usableUntil is expiry less a skew allowance.
	usableUntil time.Time
	// refreshAt is when to replace the token; zero when it lasts as long
	// as its certificate and no replacement could last longer.
	refreshAt time.Time
}

// flight is one token request for an entry, which callers join.
type flight struct {
	done     chan struct{}
	blocking bool // a caller waits; guarded by entry.mu
	tok      *heldToken
	err      error
}

// NewTokens starts keeping tokens for req, using the client's X509Source
// and STS. It obtains the first token before it returns; ctx bounds that
// wait and nothing else. Close the Tokens when done.
//
// A refusal by the STS is returned as a protocol.Error.
func (c *Client) NewTokens(ctx context.Context, req Request, opts ...TokensOption) (*Tokens, error) {
	var cfg tokensConfig
	for _, opt := range opts {
		opt.configureTokens(&cfg)
	}
	if c.closed.Load() {
		return nil, errClosed
	}
	svid, err := c.source.GetX509SVID()
	if err != nil {
		return nil, fmt.Errorf("exchangeclient: no X509-SVID: %w", err)
	}
	check := req
	if cfg.subjectToken != nil && check.SubjectToken == "" {
		check.SubjectToken = "placeholder"
	}
	if _, err := check.params(svid.ID); err != nil {
		return nil, err
	}

	t := &Tokens{c: c, req: req, events: cfg.events, subjectToken: cfg.subjectToken}
	t.life, t.stop = context.WithCancel(context.Background())
	t.entries.Store(&map[*x509.Certificate]*entry{})
	e, err := t.entryFor(svid)
	if err != nil {
		t.Close()
		return nil, err
	}
	t.current.Store(e)
	// Waiting for the first token is what NewTokens is for: it is not
	// reported as Blocking.
	f := t.acquire(e, nil, time.Time{}, false)
	select {
	case <-f.done:
	case <-ctx.Done():
		t.Close()
		return nil, fmt.Errorf("exchangeclient: waiting for the first token: %w", ctx.Err())
	}
	if f.err != nil {
		t.Close()
		return nil, f.err
	}
	t.wg.Add(1)
	go t.watch()
	return t, nil
}

// Token returns a usable token bound to leaf, a certificate this workload
// presented on a connection (see AuthInfo.Leaf). It returns the kept
// token without waiting when there is one; otherwise it requests one and
// waits for it, for at most as long as ctx allows.
//
// leaf must be an X509-SVID the source has provided (else
// ErrUnknownCertificate) and not expired (else ErrCertificateExpired).
// A refusal by the STS is returned as a protocol.Error.
func (t *Tokens) Token(ctx context.Context, leaf *x509.Certificate) (string, error) {
	if leaf == nil {
		return "", errors.New("exchangeclient: Token needs the certificate the token is to be bound to")
	}
	h, err := t.token(ctx, t.lookup(leaf), leaf)
	if err != nil {
		return "", err
	}
	return h.raw, nil
}

// lookup returns the entry of leaf, by pointer or else by content; nil
// when there is none.
func (t *Tokens) lookup(leaf *x509.Certificate) *entry {
	m := *t.entries.Load()
	if e, ok := m[leaf]; ok {
		return e
	}
	for k, e := range m {
		if bytes.Equal(k.Raw, leaf.Raw) {
			return e
		}
	}
	return nil
}

// token returns the usable token of e, the entry of leaf or nil. The fast
// path takes no lock and allocates nothing.
func (t *Tokens) token(ctx context.Context, e *entry, leaf *x509.Certificate) (*heldToken, error) {
	if e != nil && !e.dropped.Load() {
		if h := e.tok.Load(); h != nil && time.Now().Before(h.usableUntil) {
			if !e.used.Load() && e.used.CompareAndSwap(false, true) {
				e.poke()
			}
			return h, nil
		}
	}
	if e == nil {
		// A certificate the source has just started to provide.
		if svid, err := t.c.source.GetX509SVID(); err == nil && bytes.Equal(svid.Certificates[0].Raw, leaf.Raw) {
			e = t.checkSource()
		}
		switch {
		case e != nil:
		case t.isClosed():
			return nil, ErrTokensClosed
		case !time.Now().Before(leaf.NotAfter):
			// Most likely an SVID whose entry was dropped.
			return nil, fmt.Errorf("%w: x5t#S256 %s expired at %s", ErrCertificateExpired, accesstoken.Thumbprint(leaf), leaf.NotAfter.UTC().Format(time.RFC3339))
		default:
			return nil, fmt.Errorf("%w: x5t#S256 %s", ErrUnknownCertificate, accesstoken.Thumbprint(leaf))
		}
	}
	e.used.Store(true)
	return t.wait(ctx, e)
}

// wait returns a usable token of e, requesting one if it has none.
func (t *Tokens) wait(ctx context.Context, e *entry) (*heldToken, error) {
	if t.isClosed() {
		return nil, ErrTokensClosed
	}
	now := time.Now()
	if e.dropped.Load() || !now.Before(e.notAfter) {
		return nil, fmt.Errorf("%w: x5t#S256 %s expired at %s", ErrCertificateExpired, e.thumb, e.notAfter.UTC().Format(time.RFC3339))
	}
	if h := e.tok.Load(); h != nil && now.Before(h.usableUntil) {
		return h, nil
	}
	f := t.acquire(e, nil, time.Time{}, true)
	select {
	case <-f.done:
	case <-ctx.Done():
		return nil, fmt.Errorf("exchangeclient: waiting for a token: %w", ctx.Err())
	}
	if f.err != nil {
		return nil, f.err
	}
	return f.tok, nil
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
	start := time.Now()
	var h *heldToken
	var err error
	kind := EventObtained
	if from != nil && time.Now().Before(from.expiry) {
		// RFC 8693 §2.1: the server re-issues the same grant (audience,
		// scope, act) bound to the certificate of this connection, with
		// an exp no later than the original's.
		h, err = t.request(ctx, e, Request{
			SubjectToken:       from.raw,
			SubjectTokenType:   protocol.TokenTypeAccessToken,
			RequestedTokenType: t.req.RequestedTokenType,
		})
		if err == nil {
			kind = EventRebound
		} else {
			events[n] = Event{Kind: EventFailed, Thumbprint: e.thumb, Latency: time.Since(start), Err: fmt.Errorf("exchangeclient: re-binding the token: %w", err)}
			n++
		}
	}
	if h == nil {
		err = nil
		if prev := e.tok.Load(); prev != nil && time.Now().Before(prev.expiry) {
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
	} else {
		e.tok.Store(h)
	}

	e.mu.Lock()
	e.flight = nil
	f.tok, f.err = h, err
	ev := Event{Kind: kind, Thumbprint: e.thumb, Latency: time.Since(start), Blocking: f.blocking, Err: err}
	e.mu.Unlock()
	close(f.done)

	if !noticed.IsZero() {
		ev.Latency = time.Since(noticed)
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
	sent := time.Now()
	tok, err := t.c.exchangeWith(ctx, e.sts, e.svid.ID, req)
	if err != nil {
		return nil, err
	}
	return e.hold(tok, sent), nil
}

// hold schedules tok, requested at sent.
func (e *entry) hold(tok *Token, sent time.Time) *heldToken {
	expiry := tok.Expiry
	// expires_in is rounded to whole seconds against an "iat" that was
	// truncated, so the "exp" claim can come up to a second earlier; it
	// is read here only to schedule, never trusted.
	if exp, ok := jwtExpiry(tok.AccessToken); ok && exp.Before(expiry) {
		expiry = exp
	}
	life := max(expiry.Sub(sent), 0)
	h := &heldToken{
		raw:         tok.AccessToken,
		header:      "Bearer " + tok.AccessToken,
		expiry:      expiry,
		usableUntil: expiry.Add(-min(maxSkew, life/10)),
	}
	// The STS caps exp at the certificate's NotAfter (RFC 8705 §3); a
	// token so capped cannot be replaced by a longer-lived one.
	if expiry.Before(e.notAfter.Add(-time.Second)) {
		h.refreshAt = sent.Add(life * 2 / 3)
	}
	return h
}

// jwtExpiry returns the "exp" claim of a JWT without verifying it.
func jwtExpiry(raw string) (time.Time, bool) {
	_, rest, ok := strings.Cut(raw, ".")
	if !ok {
		return time.Time{}, false
	}
	payload, _, ok := strings.Cut(rest, ".")
	if !ok {
		return time.Time{}, false
	}
	b, err := base64.RawURLEncoding.DecodeString(payload)
	if err != nil {
		return time.Time{}, false
	}
	var claims struct {
		Exp int64 `json:"exp"`
	}
	if json.Unmarshal(b, &claims) != nil || claims.Exp <= 0 {
		return time.Time{}, false
	}
	return time.Unix(claims.Exp, 0), true
}

// entryFor returns the entry of svid, creating it if needed.
func (t *Tokens) entryFor(svid *x509svid.SVID) (*entry, error) {
	if len(svid.Certificates) == 0 {
		return nil, errors.New("exchangeclient: the X509-SVID has no certificate")
	}
	leaf := svid.Certificates[0]
	if e := t.lookup(leaf); e != nil {
		return e, nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return nil, ErrTokensClosed
	}
	if e := t.lookup(leaf); e != nil {
		return e, nil
	}
	e := &entry{
		owner:    t,
		svid:     svid,
		leaf:     leaf,
		thumb:    accesstoken.Thumbprint(leaf),
		notAfter: leaf.NotAfter,
		tlsCert:  &tls.Certificate{PrivateKey: svid.PrivateKey, Leaf: leaf},
		wake:     make(chan struct{}, 1),
	}
	for _, cert := range svid.Certificates {
		e.tlsCert.Certificate = append(e.tlsCert.Certificate, cert.Raw)
	}
	// A static source: every STS connection of this entry presents svid,
	// over HTTP or gRPC.
	sts, err := t.c.dialSTS(svid)
	if err != nil {
		return nil, err
	}
	e.sts = sts
	old := *t.entries.Load()
	m := make(map[*x509.Certificate]*entry, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	m[leaf] = e
	t.entries.Store(&m)
	t.wg.Add(1)
	go t.maintain(e)
	return e, nil
}

// watch notices X509-SVID rotations: on the source's Updated channel when
// it has one, and by polling, since such a channel may have other readers.
func (t *Tokens) watch() {
	defer t.wg.Done()
	var updated <-chan struct{}
	if u, ok := t.c.source.(interface{ Updated() <-chan struct{} }); ok {
		updated = u.Updated()
	}
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for {
		select {
		case <-t.life.Done():
			return
		case _, ok := <-updated:
			if !ok {
				updated = nil // a closed channel would wake us forever
			}
		case <-tick.C:
		}
		t.checkSource()
	}
}

// checkSource returns the entry of the source's X509-SVID, starting the
// rotation to it if it is new; nil when the source has no SVID.
func (t *Tokens) checkSource() *entry {
	svid, err := t.c.source.GetX509SVID()
	if err != nil || len(svid.Certificates) == 0 {
		return nil
	}
	t.mu.Lock()
	latest := t.latest
	t.mu.Unlock()
	if cur := t.current.Load(); latest == nil && cur != nil && bytes.Equal(cur.leaf.Raw, svid.Certificates[0].Raw) {
		return cur
	}
	if latest != nil && bytes.Equal(latest.leaf.Raw, svid.Certificates[0].Raw) {
		return latest
	}
	noticed := time.Now()
	e, err := t.entryFor(svid)
	if err != nil {
		return nil
	}
	t.mu.Lock()
	if t.latest == e {
		t.mu.Unlock()
		return e
	}
	t.latest = e
	t.mu.Unlock()

	var from *heldToken
	if cur := t.current.Load(); cur != nil && cur != e {
		from = cur.tok.Load()
	}
	if h := e.tok.Load(); h != nil && noticed.Before(h.usableUntil) {
		// Back to a certificate that still has a token.
		t.promote(e)
		return e
	}
	t.acquire(e, from, noticed, false)
	return e
}

// promote makes e current if it is still the newest SVID noticed.
func (t *Tokens) promote(e *entry) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.latest == e {
		t.current.Store(e)
		t.latest = nil
	}
}

// handshakeEntry returns the entry whose SVID a new connection presents:
// the current one, or the source's if that has expired.
func (t *Tokens) handshakeEntry() (*entry, error) {
	if t.isClosed() {
		return nil, ErrTokensClosed
	}
	if e := t.current.Load(); e != nil && !e.dropped.Load() && time.Now().Before(e.notAfter) {
		return e, nil
	}
	e := t.checkSource()
	if e == nil {
		return nil, errors.New("exchangeclient: the source has no X509-SVID")
	}
	if !time.Now().Before(e.notAfter) {
		return nil, fmt.Errorf("%w: the source's X509-SVID x5t#S256 %s expired at %s", ErrCertificateExpired, e.thumb, e.notAfter.UTC().Format(time.RFC3339))
	}
	return e, nil
}

// maintain refreshes e's token in the background and drops e at its
// certificate's NotAfter.
func (t *Tokens) maintain(e *entry) {
	defer t.wg.Done()
	drop := time.NewTimer(time.Until(e.notAfter))
	defer drop.Stop()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	failures := 0
	var lastFailure time.Time
	for {
		next, ok := t.plan(e, failures, lastFailure)
		timer.Stop()
		var fire <-chan time.Time
		if ok {
			timer.Reset(time.Until(next))
			fire = timer.C
		}
		select {
		case <-t.life.Done():
			return
		case <-drop.C:
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
			failures++
			lastFailure = time.Now()
		} else {
			failures = 0
		}
	}
}

// plan returns when maintain should next request a token for e, and false
// when it should not until woken.
func (t *Tokens) plan(e *entry, failures int, lastFailure time.Time) (time.Time, bool) {
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
	if failures > 0 {
		delay := min(maxRetryDelay, time.Second<<min(failures-1, 5))
		if retry := lastFailure.Add(delay); retry.After(next) {
			next = retry
		}
	}
	if !active && !time.Now().Before(next) {
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

// drop forgets e, whose certificate has expired.
func (t *Tokens) drop(e *entry) {
	t.mu.Lock()
	old := *t.entries.Load()
	m := make(map[*x509.Certificate]*entry, len(old))
	for k, v := range old {
		if v != e {
			m[k] = v
		}
	}
	t.entries.Store(&m)
	if t.latest == e {
		t.latest = nil
	}
	t.mu.Unlock()
	e.dropped.Store(true)
	e.tok.Store(nil)
	e.sts.close()
	if t.events != nil {
		t.events(Event{Kind: EventDropped, Thumbprint: e.thumb})
	}
}

func (t *Tokens) isClosed() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.closed
}

// onClose registers fn to run at Close; it runs at once if Tokens is
// closed.
func (t *Tokens) onClose(fn func()) {
	t.mu.Lock()
	if !t.closed {
		t.closers = append(t.closers, fn)
		t.mu.Unlock()
		return
	}
	t.mu.Unlock()
	fn()
}

// Close stops the background work, forgets every token and closes the
// connections Tokens and its RoundTrippers made. It does not close the
// Client. Connections made with TransportCredentials belong to their gRPC
// client; calls on them fail after Close.
func (t *Tokens) Close() error {
	t.closeOnce.Do(func() {
		t.mu.Lock()
		t.closed = true
		closers := t.closers
		t.closers = nil
		t.mu.Unlock()
		t.stop()
		t.wg.Wait()

		t.mu.Lock()
		entries := *t.entries.Load()
		t.entries.Store(&map[*x509.Certificate]*entry{})
		t.mu.Unlock()
		for _, e := range entries {
			e.dropped.Store(true)
			e.tok.Store(nil)
			e.sts.close()
		}
		for _, fn := range closers {
			fn()
		}
	})
	return nil
}
