package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/spiffe-sts/spiffe-sts/internal/fakeclock"
	"github.com/spiffe-sts/spiffe-sts/internal/testca"
)

func TestRenewalDeadline(t *testing.T) {
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name     string
		lifetime time.Duration
		want     time.Duration // after NotBefore
	}{
		// half-life plus a sixth of the lifetime
		{name: "1h SVID", lifetime: time.Hour, want: 40 * time.Minute},
		{name: "SPIRE default TTL as issued (1h + 10s backdating)", lifetime: time.Hour + 10*time.Second, want: 30*time.Minute + 5*time.Second + 10*time.Minute + 10*time.Second/6},
		// the 15s floor
		{name: "70s SVID", lifetime: 70 * time.Second, want: 50 * time.Second},
		// never past NotAfter
		{name: "20s SVID", lifetime: 20 * time.Second, want: 20 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leaf := &x509.Certificate{NotBefore: nb, NotAfter: nb.Add(tc.lifetime)}
			if got := renewalDeadline(leaf).Sub(nb); got != tc.want {
				t.Errorf("renewalDeadline = NotBefore + %s, want + %s", got, tc.want)
			}
		})
	}
}

// fakeAPI answers bundle polls with set, or err.
type fakeAPI struct {
	mu  sync.Mutex
	set *x509bundle.Set
	err error
}

func (f *fakeAPI) WatchX509Context(ctx context.Context, _ workloadapi.X509ContextWatcher) error {
	<-ctx.Done()
	return ctx.Err()
}

func (f *fakeAPI) FetchX509Bundles(context.Context) (*x509bundle.Set, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.set, f.err
}

// watchFixture is a bundleWatcher on a fake clock, seeded with an SVID of
// a 70s lifetime (as SPIRE issues a 60s TTL: 10s backdated), whose renewal
// deadline is NotBefore + 50s.
type watchFixture struct {
	t       *testing.T
	ca      *testca.CA
	clk     *fakeclock.Clock
	api     *fakeAPI
	w       *bundleWatcher
	logs    *bytes.Buffer
	svid    *x509svid.SVID
	td      spiffeid.TrustDomain
	started time.Time
}

const fixtureLifetime = 70 * time.Second

func newWatchFixture(t *testing.T) *watchFixture {
	ca := testca.New(t, "example.org")
	start := time.Now().Truncate(time.Second)
	f := &watchFixture{t: t, ca: ca, clk: fakeclock.New(start), logs: &bytes.Buffer{}, td: ca.TrustDomain, started: start}
	f.api = &fakeAPI{set: x509bundle.NewSet(ca.Bundle().X509Bundle())}
	f.w = newBundleWatcher(f.api, []spiffeid.TrustDomain{ca.TrustDomain}, hclog.New(&hclog.LoggerOptions{Output: f.logs, Level: hclog.Debug}))
	f.w.now = f.clk.Now
	f.svid = f.newSVID()
	f.w.seed(f.svid.Certificates[0], ca.Bundle())
	return f
}

// newSVID issues an SVID valid from 10s before the clock's now for
// fixtureLifetime.
func (f *watchFixture) newSVID() *x509svid.SVID {
	nb := f.clk.Now().Add(-10 * time.Second)
	return f.ca.SVIDValid(f.t, "spiffe://example.org/sts", nb, nb.Add(fixtureLifetime))
}

// age is the time since the last confirmation.
func (f *watchFixture) age() time.Duration {
	f.t.Helper()
	at, ok := f.w.BundleConfirmed(f.td)
	if !ok {
		f.t.Fatal("bundle never confirmed")
	}
	return f.clk.Now().Sub(at)
}

// push delivers a stream update with svid and bundles.
func (f *watchFixture) push(svid *x509svid.SVID, bundles ...*x509bundle.Bundle) {
	f.w.OnX509ContextUpdate(&workloadapi.X509Context{SVIDs: []*x509svid.SVID{svid}, Bundles: x509bundle.NewSet(bundles...)})
}

// TestBundleWatcherRenewalRule checks which Workload API answers confirm
// a bundle as the own SVID ages past its renewal deadline (NotBefore +
// 50s here): polls and unchanged pushes only before it, rotations and
// changed bundles always.
func TestBundleWatcherRenewalRule(t *testing.T) {
	f := newWatchFixture(t)
	ctx := t.Context()

	// Before the deadline (NotBefore+10s .. +49s), each poll confirms.
	for range 3 {
		f.clk.Advance(13 * time.Second)
		f.w.poll(ctx, time.Second)
		if age := f.age(); age != 0 {
			t.Fatalf("a poll before the renewal deadline did not confirm: age %s", age)
		}
	}
	if f.w.RenewalOverdue() {
		t.Fatal("overdue before the deadline")
	}

	// A failed poll confirms nothing.
	f.api.err = errors.New("agent down")
	f.clk.Advance(time.Second) // NotBefore + 50s: the deadline
	f.w.poll(ctx, time.Second)
	if age := f.age(); age != time.Second {
		t.Fatalf("a failed poll changed the age to %s", age)
	}
	f.api.err = nil

	// At and past the deadline, polls and unchanged pushes do not confirm.
	if !f.w.RenewalOverdue() {
		t.Fatal("not overdue at the renewal deadline")
	}
	f.w.poll(ctx, time.Second)
	f.clk.Advance(5 * time.Second)
	f.w.poll(ctx, time.Second)
	f.push(f.svid, f.ca.Bundle().X509Bundle())
	if age := f.age(); age != 6*time.Second {
		t.Fatalf("answers past the renewal deadline confirmed the bundle: age %s, want 6s", age)
	}
	if !strings.Contains(f.logs.String(), "own X509-SVID overdue for renewal") {
		t.Errorf("no log line for the overdue SVID:\n%s", f.logs)
	}

	// A changed bundle proves a sync with the SPIRE server: it confirms.
	f.clk.Advance(time.Second)
	changed := f.ca.Bundle().X509Bundle().Clone()
	changed.AddX509Authority(testca.New(t, "example.org").Cert)
	f.push(f.svid, changed)
	if age := f.age(); age != 0 {
		t.Fatalf("a changed bundle past the deadline did not confirm: age %s", age)
	}
	f.clk.Advance(time.Second)
	f.push(f.svid, changed) // the same again: not new
	if age := f.age(); age != time.Second {
		t.Fatalf("a repeated push confirmed: age %s", age)
	}

	// A rotation confirms and ends the overdue state; polls confirm again.
	f.clk.Advance(time.Second)
	f.svid = f.newSVID()
	f.push(f.svid, changed)
	if age := f.age(); age != 0 || f.w.RenewalOverdue() {
		t.Fatalf("after a rotation: age %s, overdue %v", age, f.w.RenewalOverdue())
	}
	f.clk.Advance(10 * time.Second)
	f.w.poll(ctx, time.Second)
	if age := f.age(); age != 0 {
		t.Fatalf("a poll after the rotation did not confirm: age %s", age)
	}
	if !strings.Contains(f.logs.String(), "own X509-SVID renewed; Workload API answers confirm bundles again") {
		t.Errorf("no log line for the renewal:\n%s", f.logs)
	}
}

// TestBundleWatcherStreamState checks the stream's connected state and
// that a reconnection delivering unchanged material before the deadline
// confirms.
func TestBundleWatcherStreamState(t *testing.T) {
	f := newWatchFixture(t)
	if f.w.Connected() {
		t.Fatal("connected before any update")
	}
	f.push(f.svid, f.ca.Bundle().X509Bundle())
	if !f.w.Connected() || !strings.Contains(f.logs.String(), "Workload API stream connected") {
		t.Fatalf("connected %v after an update; log:\n%s", f.w.Connected(), f.logs)
	}
	f.w.OnX509ContextWatchError(errors.New("connection refused"))
	if f.w.Connected() || !strings.Contains(f.logs.String(), "Workload API stream lost; reconnecting") {
		t.Fatalf("connected %v after an error; log:\n%s", f.w.Connected(), f.logs)
	}
	f.clk.Advance(20 * time.Second)
	f.push(f.svid, f.ca.Bundle().X509Bundle())
	if age := f.age(); age != 0 || !f.w.Connected() {
		t.Fatalf("after the reconnection: age %s, connected %v", age, f.w.Connected())
	}
	if got := f.w.bundleAges(); len(got) != 1 || !got[0].Confirmed || got[0].Age != 0 || got[0].TrustDomain != "example.org" {
		t.Errorf("bundleAges = %+v", got)
	}
}
