package helper

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/exchange/exchangeclient"
	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
	"github.com/spiffe-sts/spiffe-sts/helper/atomicdir"
)

// X509Source is what the helper needs of the Workload API: the X509-SVID
// and the bundles. *workloadapi.X509Source satisfies it; when the source
// also has an Updated() <-chan struct{} method, as that one does, the
// helper wakes on it, and it polls the source every second regardless.
type X509Source interface {
	x509svid.Source
	x509bundle.Source
}

// JWTSource fetches JWT-SVIDs; *workloadapi.Client satisfies it. It is
// needed only for GrantJWTSVID.
type JWTSource interface {
	FetchJWTSVID(ctx context.Context, params jwtsvid.Params) (*jwtsvid.SVID, error)
}

// Writer writes one Set's files as one version; *atomicdir.Writer
// satisfies it.
type Writer interface {
	Write(files map[string][]byte) error
}

// Clock is the helper's time source; exchangeclient.Clock and
// *fakeclock.Clock satisfy it.
type Clock = exchangeclient.Clock

// Grant is how a token is first obtained; every later certificate gets it
// by re-binding, and the grant is the fallback.
type Grant string

// The grants.
const (
	// GrantClientCredentials is RFC 6749 §4.4 client_credentials: a token
	// for the workload's own SPIFFE ID, authenticated by the X509-SVID.
	GrantClientCredentials Grant = "client_credentials"
	// GrantJWTSVID is an RFC 8693 token exchange of a JWT-SVID of the
	// workload, fetched from the Workload API with the issuer URL as its
	// audience.
	GrantJWTSVID Grant = "jwt_svid"
)

// TokenSpec is one token to keep.
type TokenSpec struct {
	// Name names the token and is its file name in the set.
	Name string
	// Audience is the RFC 8693 §2.1 audience; at least one.
	Audience []string
	// Scope is the requested scope; empty for the policy's default.
	Scope []string
	// Grant is GrantClientCredentials when empty.
	Grant Grant
}

// FileNames are the file names of a set's X.509 material.
type FileNames struct {
	// Cert is the PEM certificate chain, leaf first.
	Cert string
	// Key is the PEM PKCS#8 private key.
	Key string
	// Bundle is the PEM X.509 bundle of the SVID's trust domain.
	Bundle string
	// Combined, when not empty, is one more file holding the chain, leaf
	// first, followed by the key: the single PEM file that programs such
	// as HAProxy (`crt`) load a certificate and its key from.
	Combined string
}

const (
	// pollInterval is how often the helper reads the source besides
	// waking on its Updated channel.
	pollInterval = time.Second
	// maxRetryDelay caps the backoff, as in the client library.
	maxRetryDelay = 30 * time.Second
	// minRetryDelay is the shortest retry when a token nears expiry.
	minRetryDelay  = 500 * time.Millisecond
	defaultTimeout = 10 * time.Second
)

// Config configures a Helper.
type Config struct {
	// Source provides the X509-SVID and bundles; required.
	Source X509Source
	// JWTSource provides JWT-SVIDs for GrantJWTSVID tokens.
	JWTSource JWTSource
	// IssuerURL is the STS issuer URL; required when there are Tokens.
	IssuerURL string
	// STSID is the STS's SPIFFE ID; when zero, any SPIFFE ID of the
	// workload's trust domain is accepted (exchangeclient.WithServerID).
	STSID spiffeid.ID
	// Tokens are the tokens to keep. Without any the helper keeps only
	// the X509-SVID and bundle written (for a proxy that presents the
	// SVID itself) and never contacts an STS.
	Tokens []TokenSpec
	// Files names the X.509 files of the set.
	Files FileNames
	// Writer writes each set; required.
	Writer Writer
	// OnUpdate, when set, is called after every set is made current, from
	// the helper's goroutine (the next update waits for it).
	OnUpdate func(*Set)
	// OneShot makes Run return once the first set is written.
	OneShot bool
	// Timeout bounds each token request; 10 s when zero.
	Timeout time.Duration
	// Clock is the system clock when nil.
	Clock Clock
	// Backoff returns the delay before retry number failures (1, 2, ...);
	// when nil, 1 s doubling up to 30 s, as in the client library. The
	// helper retries sooner when the current set would expire first.
	Backoff func(failures int) time.Duration
	// Logger is a null logger when nil.
	Logger hclog.Logger
}

// Helper keeps a set of an X509-SVID and tokens bound to it written.
type Helper struct {
	cfg     Config
	clock   Clock
	log     hclog.Logger
	current atomic.Pointer[Set]

	// idle, set only by tests, is called each time Run is about to wait,
	// its timers set.
	idle func()

	mu      sync.Mutex
	clients map[string]*exchangeclient.Client // by the leaf's raw bytes
}

type systemClock struct{}

func (systemClock) Now() time.Time                         { return time.Now() }
func (systemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// New checks cfg, fills in defaults and returns a Helper. It does no I/O.
func New(cfg Config) (*Helper, error) {
	switch {
	case cfg.Source == nil:
		return nil, errors.New("helper: Source is required")
	case cfg.Writer == nil:
		return nil, errors.New("helper: Writer is required")
	}
	if len(cfg.Tokens) > 0 || cfg.IssuerURL != "" {
		if err := protocol.CheckIssuerURL(cfg.IssuerURL); err != nil {
			return nil, fmt.Errorf("helper: issuer URL %q %w", cfg.IssuerURL, err)
		}
	}
	names := map[string]bool{}
	fileNames := []string{cfg.Files.Cert, cfg.Files.Key, cfg.Files.Bundle}
	if cfg.Files.Combined != "" {
		fileNames = append(fileNames, cfg.Files.Combined)
	}
	for _, n := range fileNames {
		if err := atomicdir.CheckName(n); err != nil {
			return nil, fmt.Errorf("helper: %w", err)
		}
		if names[n] {
			return nil, fmt.Errorf("helper: file name %q is used twice", n)
		}
		names[n] = true
	}
	for _, spec := range cfg.Tokens {
		if err := atomicdir.CheckName(spec.Name); err != nil {
			return nil, fmt.Errorf("helper: token: %w", err)
		}
		if names[spec.Name] {
			return nil, fmt.Errorf("helper: file name %q is used twice", spec.Name)
		}
		names[spec.Name] = true
		if len(spec.Audience) == 0 {
			return nil, fmt.Errorf("helper: token %q has no audience", spec.Name)
		}
		switch spec.Grant {
		case "", GrantClientCredentials:
		case GrantJWTSVID:
			if cfg.JWTSource == nil {
				return nil, fmt.Errorf("helper: token %q uses the jwt_svid grant and there is no JWTSource", spec.Name)
			}
		default:
			return nil, fmt.Errorf("helper: token %q has unknown grant %q", spec.Name, spec.Grant)
		}
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = defaultTimeout
	}
	if cfg.Backoff == nil {
		cfg.Backoff = defaultBackoff
	}
	h := &Helper{cfg: cfg, clock: cfg.Clock, log: cfg.Logger, clients: map[string]*exchangeclient.Client{}}
	if h.clock == nil {
		h.clock = systemClock{}
	}
	if h.log == nil {
		h.log = hclog.NewNullLogger()
	}
	h.log = h.log.Named("helper")
	return h, nil
}

func defaultBackoff(failures int) time.Duration {
	return min(maxRetryDelay, time.Second<<min(failures-1, 5))
}

// Current returns the set last made current, nil before the first.
func (h *Helper) Current() *Set { return h.current.Load() }

// Ready reports whether there is a current set and it is still valid.
func (h *Helper) Ready() error {
	s := h.current.Load()
	if s == nil {
		return errors.New("helper: no set written yet")
	}
	return s.Valid(h.clock.Now())
}

// Run keeps the set written until ctx is done, when it returns nil; with
// OneShot it returns nil once the first set is written. It writes a new set
// when the X509-SVID rotates (its tokens re-bound to the new certificate
// first), when the bundle changes and when a token is due for refresh. A
// failed attempt is retried with backoff while the current set stays; a
// certificate is never written without its tokens.
func (h *Helper) Run(ctx context.Context) error {
	defer h.closeClients()
	var updated <-chan struct{}
	if u, ok := h.cfg.Source.(interface{ Updated() <-chan struct{} }); ok {
		updated = u.Updated()
	}
	failures := 0
	var retryAt time.Time
	for {
		now := h.clock.Now()
		if retryAt.IsZero() || !now.Before(retryAt) {
			err := h.step(ctx)
			switch {
			case ctx.Err() != nil:
				return nil
			case err != nil:
				failures++
				delay := h.retryDelay(failures, now)
				retryAt = now.Add(delay)
				h.log.Warn("update failed; the current set stays", logKeyAttempt, failures, logKeyRetryIn, delay, logKeyError, err)
			default:
				if failures > 0 {
					h.log.Info("recovered", logKeyAttempt, failures)
				}
				failures, retryAt = 0, time.Time{}
			}
		}
		if h.cfg.OneShot && h.current.Load() != nil {
			return nil
		}
		next := h.nextRefresh()
		if !retryAt.IsZero() {
			next = retryAt
		}
		var timer <-chan time.Time
		if !next.IsZero() {
			timer = h.clock.After(next.Sub(now))
		}
		poll := h.clock.After(pollInterval)
		if h.idle != nil {
			h.idle()
		}
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-updated:
			if !ok {
				updated = nil
			}
			retryAt = time.Time{} // something changed: try at once
		case <-timer:
		case <-poll:
		}
	}
}

// retryDelay is the backoff, shortened when the current set would expire
// before the retry: then the helper tries at half the time left.
func (h *Helper) retryDelay(failures int, now time.Time) time.Duration {
	delay := h.cfg.Backoff(failures)
	if s := h.current.Load(); s != nil {
		if left := h.expiry(s).Sub(now); left < 2*delay {
			delay = max(left/2, minRetryDelay)
		}
	}
	return delay
}

// expiry is when the first token of s becomes unusable.
func (h *Helper) expiry(s *Set) time.Time {
	first := s.Leaf().NotAfter
	for _, t := range s.Tokens {
		if t.usableUntil.Before(first) {
			first = t.usableUntil
		}
	}
	return first
}

// nextRefresh is the earliest refresh time of the current set; zero when
// nothing is scheduled.
func (h *Helper) nextRefresh() time.Time {
	s := h.current.Load()
	if s == nil {
		return time.Time{}
	}
	var next time.Time
	for _, t := range s.Tokens {
		at := t.refreshAt
		if at.IsZero() || t.usableUntil.Before(at) {
			at = t.usableUntil
		}
		if next.IsZero() || at.Before(next) {
			next = at
		}
	}
	return next
}

// step makes one attempt to bring the written set up to date.
func (h *Helper) step(ctx context.Context) error {
	svid, err := h.cfg.Source.GetX509SVID()
	if err != nil {
		return fmt.Errorf("helper: no X509-SVID: %w", err)
	}
	if len(svid.Certificates) == 0 {
		return errors.New("helper: the X509-SVID has no certificate")
	}
	bundle, err := h.cfg.Source.GetX509BundleForTrustDomain(svid.ID.TrustDomain())
	if err != nil {
		return fmt.Errorf("helper: no X.509 bundle for %s: %w", svid.ID.TrustDomain(), err)
	}
	cur := h.current.Load()
	now := h.clock.Now()
	leaf := svid.Certificates[0]
	next := &Set{SVID: svid, Bundle: bundle, Thumbprint: accesstoken.Thumbprint(leaf)}
	var reason string
	switch {
	case cur == nil:
		reason = "first"
		if err := h.obtainAll(ctx, next, nil); err != nil {
			return err
		}
	case !bytes.Equal(cur.Leaf().Raw, leaf.Raw):
		reason = "rotation"
		h.log.Info("new X509-SVID", logKeySPIFFEID, svid.ID, logKeyX5TS256, next.Thumbprint, logKeyNotAfter, leaf.NotAfter)
		if err := h.obtainAll(ctx, next, cur); err != nil {
			return err
		}
	default:
		next.SVID = cur.SVID // the same certificate, and the same key
		due, err := h.refreshDue(ctx, next, cur, now)
		if err != nil {
			return err
		}
		switch {
		case due:
			reason = "refresh"
		case !cur.Bundle.Equal(bundle):
			reason = "bundle"
		default:
			return nil
		}
	}
	return h.swap(next, reason)
}

// obtainAll gets every token for next's SVID: by re-binding prev's token
// when there is a usable one, else (or when that fails) by the grant.
func (h *Helper) obtainAll(ctx context.Context, next, prev *Set) error {
	if len(h.cfg.Tokens) == 0 {
		return nil
	}
	client, err := h.client(ctx, next.SVID)
	if err != nil {
		return err
	}
	for _, spec := range h.cfg.Tokens {
		var from *Token
		if prev != nil {
			if t, ok := prev.Token(spec.Name); ok && h.clock.Now().Before(t.Expiry) {
				from = &t
			}
		}
		tok, err := h.obtain(ctx, client, next, spec, from)
		if err != nil {
			return err
		}
		next.Tokens = append(next.Tokens, tok)
	}
	return nil
}

// refreshDue copies cur's tokens into next, replacing those due for
// refresh with the grant. It reports whether any was replaced.
func (h *Helper) refreshDue(ctx context.Context, next, cur *Set, now time.Time) (bool, error) {
	replaced := false
	for _, spec := range h.cfg.Tokens {
		t, ok := cur.Token(spec.Name)
		if ok && now.Before(t.usableUntil) && (t.refreshAt.IsZero() || now.Before(t.refreshAt)) {
			next.Tokens = append(next.Tokens, t)
			continue
		}
		client, err := h.client(ctx, next.SVID)
		if err != nil {
			return false, err
		}
		nt, err := h.obtain(ctx, client, next, spec, nil)
		if err != nil {
			return false, err
		}
		next.Tokens = append(next.Tokens, nt)
		replaced = true
	}
	return replaced, nil
}

// obtain gets spec's token bound to next's certificate: by re-binding
// from, when given (RFC 8693 §2.1 with the access token as the subject
// token, over mTLS with the new certificate), falling back to the grant.
func (h *Helper) obtain(ctx context.Context, client *exchangeclient.Client, next *Set, spec TokenSpec, from *Token) (Token, error) {
	log := h.log.With(logKeyToken, spec.Name, logKeyX5TS256, next.Thumbprint)
	if from != nil {
		sent := h.clock.Now()
		tok, err := h.exchange(ctx, client, exchangeclient.Request{
			SubjectToken:     from.AccessToken,
			SubjectTokenType: protocol.TokenTypeAccessToken,
		})
		if err == nil {
			t, err := newToken(spec.Name, tok, sent, next.Leaf(), next.Thumbprint)
			if err == nil {
				log.Debug("token re-bound", logKeyExpires, t.Expiry)
				return t, nil
			}
			log.Warn("re-bound token refused; using the grant", logKeyError, err)
		} else {
			log.Warn("re-binding failed; using the grant", logKeyError, err)
		}
	}
	req := exchangeclient.Request{Audience: spec.Audience, Scope: spec.Scope}
	if spec.Grant == GrantJWTSVID {
		svid, err := h.cfg.JWTSource.FetchJWTSVID(ctx, jwtsvid.Params{Audience: h.cfg.IssuerURL})
		if err != nil {
			return Token{}, fmt.Errorf("helper: token %q: JWT-SVID: %w", spec.Name, err)
		}
		req.SubjectToken = svid.Marshal()
	}
	sent := h.clock.Now()
	tok, err := h.exchange(ctx, client, req)
	if err != nil {
		return Token{}, fmt.Errorf("helper: token %q: %w", spec.Name, err)
	}
	t, err := newToken(spec.Name, tok, sent, next.Leaf(), next.Thumbprint)
	if err != nil {
		return Token{}, err
	}
	log.Debug("token obtained", logKeyExpires, t.Expiry)
	return t, nil
}

func (h *Helper) exchange(ctx context.Context, client *exchangeclient.Client, req exchangeclient.Request) (*exchangeclient.Token, error) {
	ctx, cancel := context.WithTimeout(ctx, h.cfg.Timeout)
	defer cancel()
	return client.Exchange(ctx, req)
}

// swap writes next and makes it current.
func (h *Helper) swap(next *Set, reason string) error {
	files, err := h.files(next)
	if err != nil {
		return err
	}
	if err := h.cfg.Writer.Write(files); err != nil {
		return fmt.Errorf("helper: writing the set: %w", err)
	}
	next.Written = h.clock.Now()
	prev := h.current.Swap(next)
	h.log.Info("set written", logKeyReason, reason, logKeySPIFFEID, next.SVID.ID, logKeyX5TS256, next.Thumbprint, logKeyExpires, h.expiry(next))
	if prev != nil && !bytes.Equal(prev.Leaf().Raw, next.Leaf().Raw) {
		h.forgetClient(prev.Leaf().Raw)
	}
	if h.cfg.OnUpdate != nil {
		h.cfg.OnUpdate(next)
	}
	return nil
}

// files renders s as file contents.
func (h *Helper) files(s *Set) (map[string][]byte, error) {
	certs, key, err := s.SVID.Marshal()
	if err != nil {
		return nil, fmt.Errorf("helper: encoding the X509-SVID: %w", err)
	}
	bundle, err := s.Bundle.Marshal()
	if err != nil {
		return nil, fmt.Errorf("helper: encoding the bundle: %w", err)
	}
	files := map[string][]byte{h.cfg.Files.Cert: certs, h.cfg.Files.Key: key, h.cfg.Files.Bundle: bundle}
	if h.cfg.Files.Combined != "" {
		files[h.cfg.Files.Combined] = append(append(make([]byte, 0, len(certs)+len(key)), certs...), key...)
	}
	for _, t := range s.Tokens {
		files[t.Name] = []byte(t.AccessToken)
	}
	return files, nil
}

// staticSource presents one X509-SVID and verifies the STS with the live
// bundles, so every token obtained over it is bound to that SVID.
type staticSource struct {
	svid    *x509svid.SVID
	bundles x509bundle.Source
}

func (s staticSource) GetX509SVID() (*x509svid.SVID, error) { return s.svid, nil }

func (s staticSource) GetX509BundleForTrustDomain(td spiffeid.TrustDomain) (*x509bundle.Bundle, error) {
	return s.bundles.GetX509BundleForTrustDomain(td)
}

// client returns the exchange client presenting svid.
func (h *Helper) client(ctx context.Context, svid *x509svid.SVID) (*exchangeclient.Client, error) {
	key := string(svid.Certificates[0].Raw)
	h.mu.Lock()
	defer h.mu.Unlock()
	if c, ok := h.clients[key]; ok {
		return c, nil
	}
	opts := []exchangeclient.Option{
		exchangeclient.WithIssuerURL(h.cfg.IssuerURL),
		exchangeclient.WithX509Source(staticSource{svid: svid, bundles: h.cfg.Source}),
		exchangeclient.WithTimeout(h.cfg.Timeout),
		exchangeclient.WithClock(h.clock),
	}
	if !h.cfg.STSID.IsZero() {
		opts = append(opts, exchangeclient.WithServerID(h.cfg.STSID))
	}
	c, err := exchangeclient.New(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("helper: exchange client: %w", err)
	}
	// Clients of certificates that never became current (their tokens
	// failed) are closed here; the current one and this one stay.
	cur := h.current.Load()
	for k, old := range h.clients {
		if cur == nil || k != string(cur.Leaf().Raw) {
			_ = old.Close()
			delete(h.clients, k)
		}
	}
	h.clients[key] = c
	return c, nil
}

func (h *Helper) forgetClient(raw []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if c, ok := h.clients[string(raw)]; ok {
		_ = c.Close()
		delete(h.clients, string(raw))
	}
}

func (h *Helper) closeClients() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for k, c := range h.clients {
		_ = c.Close()
		delete(h.clients, k)
	}
}
