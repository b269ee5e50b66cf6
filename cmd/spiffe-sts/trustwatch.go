package main

import (
	"context"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/spiffe-sts/spiffe-sts/metrics"
)

// bundleWatcher records when the Workload API last confirmed the bundle
// of each trust domain, for readiness and the fail-closed rule
// (exchange.Config.Bundles), and whether its stream is connected.
//
// The confirmation signal is a Workload API response that carried the
// trust domain's X.509 bundle: an update pushed on the X509-SVID stream
// (workloadapi.Client.WatchX509Context), or the answer to a poll
// (FetchX509Bundles) every pollEvery. A SPIRE agent pushes on that stream
// only when something changes (an SVID rotation, a bundle change); it
// re-syncs with the SPIRE server every sync_interval (5s by default) but
// does not resend unchanged material, so a silent stream alone would look
// stale in a healthy system. The poll makes the agent vouch for the bundle
// it holds now. Neither proves that the agent reached the SPIRE server:
// an agent cut off from its server answers from its cache; that outage
// shows as the own X509-SVID nearing expiry (it cannot be renewed), which
// readiness and the spiffe_sts_svid_expiry_timestamp_seconds alert watch.
type bundleWatcher struct {
	client  *workloadapi.Client
	trusted []spiffeid.TrustDomain
	now     func() time.Time
	log     hclog.Logger

	mu        sync.Mutex
	confirmed map[spiffeid.TrustDomain]time.Time
	connected bool
}

func newBundleWatcher(client *workloadapi.Client, trusted []spiffeid.TrustDomain, log hclog.Logger) *bundleWatcher {
	return &bundleWatcher{client: client, trusted: trusted, now: time.Now, log: log, confirmed: map[spiffeid.TrustDomain]time.Time{}}
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

// confirm records that the Workload API delivered the bundles of tds now.
func (w *bundleWatcher) confirm(tds []spiffeid.TrustDomain) {
	now := w.now()
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, td := range tds {
		w.confirmed[td] = now
	}
}

// OnX509ContextUpdate implements workloadapi.X509ContextWatcher.
func (w *bundleWatcher) OnX509ContextUpdate(c *workloadapi.X509Context) {
	var tds []spiffeid.TrustDomain
	for _, b := range c.Bundles.Bundles() {
		tds = append(tds, b.TrustDomain())
	}
	w.confirm(tds)
	w.mu.Lock()
	was := w.connected
	w.connected = true
	w.mu.Unlock()
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
	go func() { _ = w.client.WatchX509Context(ctx, w) }()
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
	set, err := w.client.FetchX509Bundles(ctx)
	if err != nil {
		w.log.Debug("Workload API bundle poll failed", logKeyError, err.Error())
		return
	}
	var tds []spiffeid.TrustDomain
	for _, b := range set.Bundles() {
		tds = append(tds, b.TrustDomain())
	}
	w.confirm(tds)
}

// bundles is the metrics view of the accepted trust domains.
func (w *bundleWatcher) bundles() []metrics.Bundle {
	now := w.now()
	out := make([]metrics.Bundle, 0, len(w.trusted))
	for _, td := range w.trusted {
		at, ok := w.BundleConfirmed(td)
		out = append(out, metrics.Bundle{TrustDomain: td.Name(), Age: now.Sub(at), Confirmed: ok})
	}
	return out
}
