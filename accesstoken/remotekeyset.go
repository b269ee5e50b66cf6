package accesstoken

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
)

// Defaults of RemoteKeySetConfig.
const (
	DefaultMinRefreshInterval = 10 * time.Second
	DefaultRefreshInterval    = 5 * time.Minute
)

const (
	// maxJWKSBytes bounds the JWKS document read from the issuer.
	maxJWKSBytes = 1 << 20
	// fetchTimeout bounds one JWKS fetch. A fetch serves every caller
	// waiting for it, so it does not stop when the caller that started it
	// gives up; each caller stops waiting when its own context ends.
	fetchTimeout = 30 * time.Second
)

// RemoteKeySetConfig configures a RemoteKeySet.
type RemoteKeySetConfig struct {
	// HTTPClient fetches the JWKS; required. Authenticate the issuer with
	// it, for example with mTLS:
	//
	//	&http.Client{Transport: &http.Transport{TLSClientConfig:
	//		tlsconfig.MTLSClientConfig(src, src, tlsconfig.AuthorizeID(stsID))}}
	HTTPClient *http.Client
	// MinRefreshInterval is the least time between two fetches after
	// construction, so that tokens naming unknown keys cannot make the key
	// set hammer the issuer; DefaultMinRefreshInterval when zero. A lookup
	// of an unknown kid within it fails with ErrUnknownKey without a fetch.
	MinRefreshInterval time.Duration
	// RefreshInterval is the age after which keys are refetched: the next
	// lookup still answers from the keys it has and starts a fetch in the
	// background (stale-while-revalidate); DefaultRefreshInterval when
	// zero. No goroutine runs between lookups.
	RefreshInterval time.Duration
	// Now returns the current time; time.Now when nil.
	Now func() time.Time
}

// RemoteKeySet is a KeySet that fetches the issuer's JWKS (RFC 7517 §5),
// caches it, and fetches it again when a token names a key it does not
// hold (the issuer has rotated its keys) or when the keys are older than
// RefreshInterval. Concurrent lookups that need a fetch share one.
// Create one per issuer and share it; it is safe for concurrent use.
type RemoteKeySet struct {
	url             string
	client          *http.Client
	minRefresh      time.Duration
	refreshInterval time.Duration
	now             func() time.Time

	keys atomic.Pointer[fetchedKeys]

	mu sync.Mutex
	// inflight is the fetch under way, nil when there is none.
	inflight *keyFetch
	// lastFetch is when the last fetch after construction started; zero
	// before the first.
	lastFetch time.Time
}

type fetchedKeys struct {
	set       *StaticKeySet
	fetchedAt time.Time
}

// keyFetch is one fetch that several lookups may wait for.
type keyFetch struct {
	done chan struct{} // closed when err is set and, on success, keys stored
	err  error
}

// NewRemoteKeySet returns a key set serving the JWKS at jwksURL, which must
// be an https URL. It fetches the JWKS before returning and blocks until
// the fetch completes or ctx ends. The document is parsed like
// ParseStaticKeySet: every key needs a "kid" and an "alg", and only the
// public part of keys is kept.
func NewRemoteKeySet(ctx context.Context, jwksURL string, cfg RemoteKeySetConfig) (*RemoteKeySet, error) {
	u, err := url.Parse(jwksURL)
	switch {
	case err != nil:
		return nil, fmt.Errorf("accesstoken: JWKS URL: %w", err)
	case u.Scheme != "https" || u.Host == "":
		return nil, fmt.Errorf("accesstoken: JWKS URL %q is not an https URL", jwksURL)
	case cfg.HTTPClient == nil:
		return nil, errors.New("accesstoken: RemoteKeySetConfig.HTTPClient is nil")
	case cfg.MinRefreshInterval < 0 || cfg.RefreshInterval < 0:
		return nil, errors.New("accesstoken: negative refresh interval")
	}
	k := &RemoteKeySet{
		url:             jwksURL,
		client:          cfg.HTTPClient,
		minRefresh:      cfg.MinRefreshInterval,
		refreshInterval: cfg.RefreshInterval,
		now:             cfg.Now,
	}
	if k.minRefresh == 0 {
		k.minRefresh = DefaultMinRefreshInterval
	}
	if k.refreshInterval == 0 {
		k.refreshInterval = DefaultRefreshInterval
	}
	if k.now == nil {
		k.now = time.Now
	}
	set, err := k.fetch(ctx)
	if err != nil {
		return nil, err
	}
	k.keys.Store(&fetchedKeys{set: set, fetchedAt: k.now()})
	return k, nil
}

// LookupKey implements KeySet. A known kid is answered without I/O (keys
// older than RefreshInterval are refetched in the background). An unknown
// kid waits for a fetch, shared with concurrent lookups, unless the last
// fetch began less than MinRefreshInterval ago; if the kid is still
// unknown the error wraps ErrUnknownKey, and if the fetch failed it wraps
// the fetch error too.
func (k *RemoteKeySet) LookupKey(ctx context.Context, kid string) (jwk.Key, error) {
	keys := k.keys.Load()
	if key, ok := keys.set.byID[kid]; ok {
		if k.now().Sub(keys.fetchedAt) >= k.refreshInterval {
			k.refreshStale(ctx)
		}
		return key, nil
	}

	k.mu.Lock()
	// A fetch may have finished since the load above.
	if key, ok := k.keys.Load().set.byID[kid]; ok {
		k.mu.Unlock()
		return key, nil
	}
	f := k.inflight
	if f == nil {
		if now := k.now(); !k.lastFetch.IsZero() && now.Sub(k.lastFetch) < k.minRefresh {
			k.mu.Unlock()
			return nil, fmt.Errorf("%w: %q (JWKS fetched less than %s ago)", ErrUnknownKey, kid, k.minRefresh)
		}
		f = k.startFetchLocked(ctx)
	}
	k.mu.Unlock()

	select {
	case <-ctx.Done():
		return nil, fmt.Errorf("accesstoken: waiting for the JWKS: %w", ctx.Err())
	case <-f.done:
	}
	if f.err != nil {
		return nil, fmt.Errorf("%w: %q: %w", ErrUnknownKey, kid, f.err)
	}
	if key, ok := k.keys.Load().set.byID[kid]; ok {
		return key, nil
	}
	return nil, fmt.Errorf("%w: %q", ErrUnknownKey, kid)
}

// refreshStale starts a background fetch of stale keys unless one is under
// way or the last began less than MinRefreshInterval ago (so a failing
// issuer is retried at that pace, while the old keys keep working).
func (k *RemoteKeySet) refreshStale(ctx context.Context) {
	k.mu.Lock()
	defer k.mu.Unlock()
	now := k.now()
	switch {
	case k.inflight != nil,
		now.Sub(k.keys.Load().fetchedAt) < k.refreshInterval, // refreshed meanwhile
		!k.lastFetch.IsZero() && now.Sub(k.lastFetch) < k.minRefresh:
		return
	}
	k.startFetchLocked(ctx)
}

// startFetchLocked starts a fetch in a goroutine; k.mu must be held. The
// fetch keeps ctx's values but not its cancellation, since other lookups
// may wait for it.
func (k *RemoteKeySet) startFetchLocked(ctx context.Context) *keyFetch {
	f := &keyFetch{done: make(chan struct{})}
	k.inflight = f
	k.lastFetch = k.now()
	go func() {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), fetchTimeout)
		set, err := k.fetch(fctx)
		cancel()
		k.mu.Lock()
		if err == nil {
			k.keys.Store(&fetchedKeys{set: set, fetchedAt: k.now()})
		}
		f.err = err
		k.inflight = nil
		k.mu.Unlock()
		close(f.done)
	}()
	return f
}

// fetch GETs and parses the JWKS.
func (k *RemoteKeySet) fetch(ctx context.Context) (*StaticKeySet, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return nil, fmt.Errorf("accesstoken: JWKS request: %w", err)
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("accesstoken: fetch JWKS: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("accesstoken: fetch JWKS: %s", resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, fmt.Errorf("accesstoken: fetch JWKS: %w", err)
	}
	if len(body) > maxJWKSBytes {
		return nil, fmt.Errorf("accesstoken: fetch JWKS: document larger than %d bytes", maxJWKSBytes)
	}
	set, err := ParseStaticKeySet(body)
	if err != nil {
		return nil, err
	}
	if set.Len() == 0 {
		return nil, errors.New("accesstoken: fetched JWKS has no keys")
	}
	return set, nil
}
