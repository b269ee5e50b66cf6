package main

import (
	"context"
	"crypto/x509"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/spiffe-sts/spiffe-sts/metrics"
)

// workloadAPI is the part of *workloadapi.Client that bundleWatcher uses.
type workloadAPI interface {
	WatchX509Context(ctx context.Context, watcher workloadapi.X509ContextWatcher) error
	FetchX509Bundles(ctx context.Context) (*x509bundle.Set, error)
}

// renewalSlackMin and renewalSlackDivisor set how long past half-life a
// healthy SPIRE agent may take to renew an X509-SVID; see renewalDeadline.
const (
	renewalSlackMin     = 15 * time.Second
	renewalSlackDivisor = 6
)

// renewalDeadline is the time by which a SPIRE agent that reaches its
// server renews the X509-SVID leaf: NotBefore + lifetime/2 +
// max(lifetime/6, 15s), and never later than NotAfter.
//
// SPIRE (pkg/common/rotationutil, shouldRotateByHalf) renews once the time
// left is under a half-life jittered by ±10%, so by NotBefore + 0.55 ×
// lifetime, and checks at every sync with its server (sync_interval, 5s by
// default; a failed sync backs off from there). lifetime/6 covers the
// jitter (lifetime/20) with room for a few failed syncs; 15s covers the
// default sync interval twice over and the signing round trip for short
// SVIDs.
func renewalDeadline(leaf *x509.Certificate) time.Time {
	lifetime := leaf.NotAfter.Sub(leaf.NotBefore)
	slack := max(lifetime/renewalSlackDivisor, renewalSlackMin)
	deadline := leaf.NotBefore.Add(lifetime/2 + slack)
	if deadline.After(leaf.NotAfter) {
		return leaf.NotAfter
	}
	return deadline
}

// bundleWatcher records when the Workload API last confirmed the bundle
// of each trust domain, for readiness and the fail-closed rule
// (exchange.Config.Bundles), and whether its stream is connected.
//
// A Workload API answer proves what the SPIRE agent holds, not that the
// agent still reaches its server: an agent cut off from its server answers
// from its cache. The proof that it did reach the server is the renewal of
// the own X509-SVID, which SPIRE does at about half-life
// (renewalDeadline). So:
//
//   - an update pushed on the X509-SVID stream that carries a new own
//     X509-SVID (a rotation) or a changed bundle confirms every bundle it
//     carries: the agent had just synced with its server;
//   - any other answer, a poll (FetchX509Bundles every pollEvery) or a
//     pushed update with nothing new, confirms the bundles it carries only
//     while the own X509-SVID is not overdue for renewal.
//
// The poll is needed because a SPIRE agent pushes only when something
// changes, so a silent stream alone would look stale in a healthy system
// between rotations. Once the own X509-SVID is overdue the bundles age,
// and readiness (max_bundle_age) and then the fail-closed rule
// (bundle_hard_limit) follow.
type bundleWatcher struct {
	api     workloadAPI
	trusted []spiffeid.TrustDomain
	now     func() time.Time
	log     hclog.Logger

	mu        sync.Mutex
	confirmed map[spiffeid.TrustDomain]time.Time
	connected bool
	// leaf is the own X509-SVID leaf last delivered; bundles the bundles
	// last delivered on the stream.
	leaf    *x509.Certificate
	bundles map[spiffeid.TrustDomain]*x509bundle.Bundle
	// overdue is the renewal state last logged.
	overdue bool
}

func newBundleWatcher(api workloadAPI, trusted []spiffeid.TrustDomain, log hclog.Logger) *bundleWatcher {
	return &bundleWatcher{api: api, trusted: trusted, now: time.Now, log: log,
		confirmed: map[spiffeid.TrustDomain]time.Time{}, bundles: map[spiffeid.TrustDomain]*x509bundle.Bundle{}}
}

// seed records the own X509-SVID leaf and confirms the bundles that src
// holds of the trusted trust domains: the first answer of the Workload
// API, before the watcher runs.
func (w *bundleWatcher) seed(leaf *x509.Certificate, src x509bundle.Source) {
	now := w.now()
	w.mu.Lock()
	defer w.mu.Unlock()
	w.leaf = leaf
	for _, td := range w.trusted {
		if b, err := src.GetX509BundleForTrustDomain(td); err == nil {
			w.bundles[td] = b
			w.confirmed[td] = now
		}
	}
}

// BundleConfirmed implements exchange.BundleConfirmations.
func (w *bundleWatcher) BundleConfirmed(td spiffeid.TrustDomain) (time.Time, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	at, ok := w.confirmed[td]
	return at, ok
}

// Connected reports whether the stream delivered an update and has not
// failed since.
func (w *bundleWatcher) Connected() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.connected
}

// RenewalOverdue reports whether the own X509-SVID is past its
// renewalDeadline: Workload API answers then no longer confirm bundles.
func (w *bundleWatcher) RenewalOverdue() bool {
	now := w.now()
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.overdueLocked(now)
}

func (w *bundleWatcher) overdueLocked(now time.Time) bool {
	return w.leaf != nil && !now.Before(renewalDeadline(w.leaf))
}

// answered records an answer of the Workload API carrying bundles at now;
// fresh answers (a rotation, a changed bundle) confirm them regardless of
// the own SVID's renewal. It logs when the renewal state changes.
func (w *bundleWatcher) answered(now time.Time, bundles []*x509bundle.Bundle, fresh bool) {
	w.mu.Lock()
	overdue := w.overdueLocked(now)
	if fresh || !overdue {
		for _, b := range bundles {
			w.confirmed[b.TrustDomain()] = now
		}
	}
	was := w.overdue
	w.overdue = overdue
	leaf := w.leaf
	w.mu.Unlock()
	switch {
	case overdue && !was:
		w.log.Warn("own X509-SVID overdue for renewal: the SPIRE agent may be cut off from its server; Workload API answers no longer confirm bundles",
			logKeyRenewBy, renewalDeadline(leaf).UTC().Format(time.RFC3339),
			logKeyExpires, leaf.NotAfter.UTC().Format(time.RFC3339))
	case !overdue && was:
		w.log.Info("own X509-SVID renewed; Workload API answers confirm bundles again",
			logKeyExpires, leaf.NotAfter.UTC().Format(time.RFC3339))
	}
}

// OnX509ContextUpdate implements workloadapi.X509ContextWatcher.
func (w *bundleWatcher) OnX509ContextUpdate(c *workloadapi.X509Context) {
	now := w.now()
	bundles := c.Bundles.Bundles()
	w.mu.Lock()
	fresh := false
	if svid := c.DefaultSVID(); svid != nil && len(svid.Certificates) > 0 {
		if leaf := svid.Certificates[0]; w.leaf == nil || !w.leaf.Equal(leaf) {
			w.leaf, fresh = leaf, true
		}
	}
	for _, b := range bundles {
		if prev, ok := w.bundles[b.TrustDomain()]; !ok || !prev.Equal(b) {
			w.bundles[b.TrustDomain()], fresh = b, true
		}
	}
	was := w.connected
	w.connected = true
	w.mu.Unlock()
	w.answered(now, bundles, fresh)
	if !was {
		w.log.Info("Workload API stream connected")
	}
}

// OnX509ContextWatchError implements workloadapi.X509ContextWatcher; the
// client reconnects by itself.
func (w *bundleWatcher) OnX509ContextWatchError(err error) {
	w.mu.Lock()
	was := w.connected
	w.connected = false
	w.mu.Unlock()
	if was {
		w.log.Warn("Workload API stream lost; reconnecting", logKeyError, err.Error())
	}
}

// run watches the stream and polls every pollEvery until ctx is done.
func (w *bundleWatcher) run(ctx context.Context, pollEvery time.Duration) {
	go func() { _ = w.api.WatchX509Context(ctx, w) }()
	t := time.NewTicker(pollEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			w.poll(ctx, pollEvery)
		}
	}
}

// poll asks the Workload API for the bundles it holds now.
func (w *bundleWatcher) poll(ctx context.Context, timeout time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	set, err := w.api.FetchX509Bundles(ctx)
	if err != nil {
		w.log.Debug("Workload API bundle poll failed", logKeyError, err.Error())
		return
	}
	w.answered(w.now(), set.Bundles(), false)
}

// bundleAges is the metrics view of the accepted trust domains.
func (w *bundleWatcher) bundleAges() []metrics.Bundle {
	now := w.now()
	out := make([]metrics.Bundle, 0, len(w.trusted))
	for _, td := range w.trusted {
		at, ok := w.BundleConfirmed(td)
		out = append(out, metrics.Bundle{TrustDomain: td.Name(), Age: now.Sub(at), Confirmed: ok})
	}
	return out
}
