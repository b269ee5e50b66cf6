package exchangeclient

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
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
	// sidecar, with WithSidecar, is the one entry, without a certificate;
	// nil otherwise.
	sidecar *entry

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

// NewTokens starts keeping tokens for req, using the client's X509Source
// and STS. It obtains the first token before it returns; ctx bounds that
// wait and nothing else. Close the Tokens when done.
//
// A refusal by the STS is returned as an protocol.Error.
func (c *Client) NewTokens(ctx context.Context, req Request, opts ...TokensOption) (*Tokens, error) {
	var cfg tokensConfig
	for _, opt := range opts {
		opt.configureTokens(&cfg)
	}
	if c.closed.Load() {
		return nil, errClosed
	}
	if c.sidecar != nil {
		return c.newSidecarTokens(ctx, req, cfg)
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
	if err := t.awaitFirst(ctx, e); err != nil {
		return nil, err
	}
	t.wg.Add(1)
	go t.watch()
	return t, nil
}

// awaitFirst waits for e's first token, closing t when it fails or ctx
// ends first.
func (t *Tokens) awaitFirst(ctx context.Context, e *entry) error {
	f := t.acquire(e, nil, time.Time{}, false)
	select {
	case <-f.done:
	case <-ctx.Done():
		t.Close()
		return fmt.Errorf("exchangeclient: waiting for the first token: %w", ctx.Err())
	}
	if f.err != nil {
		t.Close()
		return f.err
	}
	return nil
}

// Token returns a usable token bound to leaf, a certificate this workload
// presented on a connection (see AuthInfo.Leaf). It returns the kept
// token without waiting when there is one; otherwise it requests one and
// waits for it, for at most as long as ctx allows.
//
// leaf must be an X509-SVID the source has provided (else
// ErrUnknownCertificate) and not expired (else ErrCertificateExpired).
// A refusal by the STS is returned as an protocol.Error.
//
// With WithSidecar the workload does not know the certificate: leaf is
// ignored and may be nil.
func (t *Tokens) Token(ctx context.Context, leaf *x509.Certificate) (string, error) {
	if t.sidecar != nil {
		return t.sidecarToken(ctx)
	}
	if leaf == nil {
		return "", errors.New("exchangeclient: Token needs the certificate the token is to be bound to")
	}
	h, err := t.token(ctx, t.lookup(leaf), leaf)
	if err != nil {
		return "", err
	}
	return h.raw, nil
}

// token returns the usable token of e, the entry of leaf or nil. The fast
// path takes no lock and allocates nothing.
func (t *Tokens) token(ctx context.Context, e *entry, leaf *x509.Certificate) (*heldToken, error) {
	if e != nil && !e.dropped.Load() {
		if h := e.tok.Load(); h != nil && t.c.clock.Now().Before(h.usableUntil) {
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
		case !t.c.clock.Now().Before(leaf.NotAfter):
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
	now := t.c.clock.Now()
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
