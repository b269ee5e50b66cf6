package keyring_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/spiffe-sts/spiffe-sts/internal/fakeclock"
	"github.com/spiffe-sts/spiffe-sts/issuer/keyring"
	"github.com/spiffe-sts/spiffe-sts/issuer/keyring/internal/keyringtest"
)

func TestLifecycle(t *testing.T) {
	clk := keyringtest.NewClock()
	store := &memStore{}
	m := newManager(t, baseConfig(store, clk.Now))
	ctx := context.Background()

	s1, k1, alg := m.Active()
	if s1 == nil || alg != keyring.ES256 {
		t.Fatalf("Active = %v, %q, %q", s1, k1, alg)
	}
	if got := published(m); len(got) != 1 || got[k1] != keyring.StateActive {
		t.Fatalf("Published = %v, want only %s active", got, k1)
	}
	a1 := store.records()[0].Activate
	if !a1.Before(t0) {
		t.Errorf("first key activates at %s, want at once (before %s)", a1, t0)
	}

	// Not due until Activate + period - window.
	due := a1.Add(24*time.Hour - 10*time.Minute)
	clk.Set(due.Add(-time.Second))
	refresh(t, m)
	if n := len(store.records()); n != 1 {
		t.Fatalf("%d records before rotation is due, want 1", n)
	}
	v := m.Version()
	changed := m.Changed()
	clk.Set(due)
	refresh(t, m)
	recs := store.records()
	if len(recs) != 2 {
		t.Fatalf("%d records when due, want 2", len(recs))
	}
	k2, a2 := recs[1].KeyID, recs[1].Activate
	if want := due.Add(10 * time.Minute); !a2.Equal(want) {
		t.Errorf("next key activates at %s, want %s", a2, want)
	}
	select {
	case <-changed:
	default:
		t.Error("Changed not closed when a next key was published")
	}
	if m.Version() <= v {
		t.Error("Version did not grow")
	}
	if got := published(m); got[k1] != keyring.StateActive || got[k2] != keyring.StateNext {
		t.Fatalf("Published = %v, want %s active and %s next", got, k1, k2)
	}

	// next -> active by time alone, without a refresh.
	clk.Set(a2.Add(-time.Microsecond))
	if got := activeKID(m); got != k1 {
		t.Fatalf("Active = %s just before activation, want %s", got, k1)
	}
	clk.Set(a2)
	if got := activeKID(m); got != k2 {
		t.Fatalf("Active = %s at activation, want %s", got, k2)
	}
	if got := published(m); got[k1] != keyring.StateRetired || got[k2] != keyring.StateActive {
		t.Fatalf("Published = %v, want %s retired and %s active", got, k1, k2)
	}

	// retired -> removed after TTL + leeway; the refresh deletes it.
	end := a2.Add(time.Hour + time.Minute)
	clk.Set(end.Add(-time.Microsecond))
	refresh(t, m)
	if _, ok := published(m)[k1]; !ok {
		t.Fatal("retired key unpublished before its tokens expired")
	}
	clk.Set(end)
	if _, ok := published(m)[k1]; ok {
		t.Fatal("removed key still published")
	}
	refresh(t, m)
	if recs := store.records(); len(recs) != 1 || recs[0].KeyID != k2 {
		t.Fatalf("records after removal = %v, want only %s", recs, k2)
	}
	infos, err := keyring.List(ctx, baseConfig(store, clk.Now))
	if err != nil || len(infos) != 1 || infos[0].State != keyring.StateActive {
		t.Fatalf("List = %+v, %v", infos, err)
	}
}

// TestSimulation runs three replicas with clocks 5s behind, exact and 5s
// ahead on one store through many rotations, refreshing each every step,
// and checks the ring's promises at every step.
func TestSimulation(t *testing.T) {
	const (
		step   = 20 * time.Second
		window = 10 * time.Minute
		ttl    = 15 * time.Minute
		skew   = 5 * time.Second
	)
	clk := keyringtest.NewClock()
	store := &memStore{}
	skews := []time.Duration{-skew, 0, skew}
	var ms []*keyring.Manager
	for _, d := range skews {
		cfg := baseConfig(store, skewed(clk, d))
		cfg.RotationPeriod = time.Hour
		cfg.PublicationWindow = window
		cfg.MaxTokenTTL = ttl
		ms = append(ms, newManager(t, cfg))
	}
	firstKID := activeKID(ms[0])
	firstPublished := map[string]time.Time{} // any replica
	firstSigned := map[string]time.Time{}
	minePublished := make([]map[string]time.Time, len(ms))
	for i := range minePublished {
		minePublished[i] = map[string]time.Time{}
	}
	lastSigned := map[string]time.Time{}
	rotations := 0
	prevActive := firstKID

	for now := t0; now.Before(t0.Add(30 * time.Hour)); now = now.Add(step) {
		clk.Set(now)
		for i, m := range ms {
			refresh(t, m)
			for kid := range published(m) {
				if _, ok := firstPublished[kid]; !ok {
					firstPublished[kid] = now
				}
				if _, ok := minePublished[i][kid]; !ok {
					minePublished[i][kid] = now
				}
			}
		}
		for i, m := range ms {
			kid := activeKID(m)
			if kid == "" {
				t.Fatalf("%s: replica %d has no active key", now, i)
			}
			if _, ok := firstSigned[kid]; !ok {
				firstSigned[kid] = now
			}
			lastSigned[kid] = now
			if kid != firstKID {
				if d := now.Sub(minePublished[i][kid]); d < window-2*skew-step {
					t.Fatalf("%s: replica %d signs with %s published %s before, want >= %s", now, i, kid, d, window-2*skew-step)
				}
			}
			// Every token signed in the last TTL still verifies here.
			pub := published(m)
			for k, at := range lastSigned {
				if now.Sub(at) <= ttl {
					if _, ok := pub[k]; !ok {
						t.Fatalf("%s: replica %d no longer publishes %s, which signed at %s", now, i, k, at)
					}
				}
			}
		}
		if kid := activeKID(ms[1]); kid != prevActive {
			rotations++
			prevActive = kid
		}
		next := 0
		for _, st := range keyring.Schedule(testSchedule).States(store.records(), now) {
			if st == keyring.StateNext {
				next++
			}
		}
		if next > 1 {
			t.Fatalf("%s: %d next keys in the store, want at most 1", now, next)
		}
	}
	for kid, s := range firstSigned {
		if kid == firstKID {
			continue
		}
		if d := s.Sub(firstPublished[kid]); d < window-2*skew {
			t.Errorf("%s signed %s after first publication, want >= %s", kid, d, window-2*skew)
		}
	}
	if rotations < 25 {
		t.Errorf("%d rotations in 30h with a 1h period, want >= 25", rotations)
	}
	if n := len(store.records()); n > 4 {
		t.Errorf("%d records left, want removed keys deleted", n)
	}
}

// TestConcurrentNextKey makes four replicas list the ring at the same
// moment when a next key is due: all propose the same Seq, one insert
// wins, the others adopt its key.
func TestConcurrentNextKey(t *testing.T) {
	const n = 4
	for _, d := range []time.Duration{0, 5 * time.Second} {
		t.Run(fmt.Sprintf("skew %s", d), func(t *testing.T) {
			clk := keyringtest.NewClock()
			store := &memStore{}
			var ms []*keyring.Manager
			for i := range n {
				ms = append(ms, newManager(t, baseConfig(store, skewed(clk, time.Duration(i%2*2-1)*d))))
			}
			if got := len(store.records()); got != 1 {
				t.Fatalf("%d records after %d replicas started, want 1", got, n)
			}
			clk.Advance(24 * time.Hour)

			var arrived sync.WaitGroup
			arrived.Add(n)
			var once sync.Once
			release := make(chan struct{})
			var calls sync.Mutex
			count := 0
			store.mu.Lock()
			store.onList = func() {
				calls.Lock()
				count++
				first := count <= n
				calls.Unlock()
				if first {
					arrived.Done()
					<-release
				}
			}
			store.mu.Unlock()
			go func() { arrived.Wait(); once.Do(func() { close(release) }) }()

			var wg sync.WaitGroup
			errs := make([]error, n)
			for i, m := range ms {
				wg.Go(func() { errs[i] = m.Refresh(context.Background()) })
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Fatalf("replica %d: %v", i, err)
				}
			}
			if count < 2*n {
				t.Errorf("%d List calls, want every replica to reload after its insert or conflict", count)
			}
			recs := store.records()
			if len(recs) != 2 {
				t.Fatalf("%d records, want the first key and exactly one next key", len(recs))
			}
			want := recs[1].KeyID
			for i, m := range ms {
				if got := published(m); got[want] != keyring.StateNext {
					t.Errorf("replica %d publishes %v, want %s next", i, got, want)
				}
			}
		})
	}
}

func TestRevoke(t *testing.T) {
	ctx := context.Background()
	// setup: k1 active, k2 next (forced rotation), both managers see both.
	setup := func(t *testing.T) (*fakeclock.Clock, *memStore, *keyring.Manager, *keyring.Manager, string, string) {
		clk := keyringtest.NewClock()
		store := &memStore{}
		m := newManager(t, baseConfig(store, clk.Now))
		other := newManager(t, baseConfig(store, skewed(clk, 5*time.Second)))
		k1 := activeKID(m)
		info, err := m.Rotate(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if want := clk.Now().Add(10 * time.Minute); !info.Activate.Equal(want) || info.State != keyring.StateNext {
			t.Fatalf("Rotate = %+v, want next at %s", info, want)
		}
		refresh(t, other)
		return clk, store, m, other, k1, info.KeyID
	}

	t.Run("next", func(t *testing.T) {
		clk, _, m, other, k1, k2 := setup(t)
		if err := m.Revoke(ctx, k2); err != nil {
			t.Fatal(err)
		}
		refresh(t, other)
		for _, x := range []*keyring.Manager{m, other} {
			if got := published(x); len(got) != 1 || got[k1] != keyring.StateActive {
				t.Fatalf("Published = %v, want only %s", got, k1)
			}
		}
		clk.Advance(time.Hour)
		if got := activeKID(m); got != k1 {
			t.Fatalf("revoked next key activated: Active = %s", got)
		}
	})

	t.Run("active with a next key", func(t *testing.T) {
		_, _, m, other, k1, k2 := setup(t)
		if err := m.Revoke(ctx, k1); err != nil {
			t.Fatal(err)
		}
		refresh(t, other)
		for _, x := range []*keyring.Manager{m, other} {
			if got := activeKID(x); got != k2 {
				t.Fatalf("Active = %s, want the promoted next key %s", got, k2)
			}
			if got := published(x); len(got) != 1 {
				t.Fatalf("Published = %v, want only %s", got, k2)
			}
		}
	})

	t.Run("active without a next key", func(t *testing.T) {
		clk := keyringtest.NewClock()
		store := &memStore{}
		m := newManager(t, baseConfig(store, clk.Now))
		k1 := activeKID(m)
		if err := keyring.Revoke(ctx, baseConfig(store, clk.Now), k1); err != nil {
			t.Fatal(err)
		}
		refresh(t, m)
		k := activeKID(m)
		if k == "" || k == k1 {
			t.Fatalf("Active = %q after revoking %s, want a new key", k, k1)
		}
		if got := published(m); len(got) != 1 || got[k] != keyring.StateActive {
			t.Fatalf("Published = %v", got)
		}
	})

	t.Run("retired", func(t *testing.T) {
		clk, _, m, _, k1, k2 := setup(t)
		clk.Advance(10 * time.Minute)
		refresh(t, m)
		if got := published(m); got[k1] != keyring.StateRetired {
			t.Fatalf("Published = %v, want %s retired", got, k1)
		}
		if err := m.Revoke(ctx, k1); err != nil {
			t.Fatal(err)
		}
		if got := published(m); len(got) != 1 || got[k2] != keyring.StateActive {
			t.Fatalf("Published = %v, want only %s", got, k2)
		}
	})

	t.Run("unknown", func(t *testing.T) {
		_, _, m, _, _, _ := setup(t)
		if err := m.Revoke(ctx, "nope"); !errors.Is(err, keyring.ErrNotFound) {
			t.Fatalf("Revoke = %v, want ErrNotFound", err)
		}
	})
}

func TestStoreOutage(t *testing.T) {
	clk := keyringtest.NewClock()
	store := &memStore{}
	m := newManager(t, baseConfig(store, clk.Now))
	if st := m.Status(); !st.StoreReachable || st.LastError != nil || !st.LastRefresh.Equal(t0) {
		t.Fatalf("Status = %+v", st)
	}
	k1 := activeKID(m)
	if _, err := m.Rotate(context.Background()); err != nil {
		t.Fatal(err)
	}
	store.setDown(true)
	clk.Advance(24 * time.Hour)
	if err := m.Refresh(context.Background()); !errors.Is(err, errDown) {
		t.Fatalf("Refresh = %v, want the store's error", err)
	}
	st := m.Status()
	if st.StoreReachable || !errors.Is(st.LastError, errDown) || !st.LastRefresh.Equal(t0) {
		t.Fatalf("Status = %+v, want unreachable since %s", st, t0)
	}
	// The in-memory ring goes on: the next key took over by time.
	if s, kid, _ := m.Active(); s == nil || kid == k1 {
		t.Fatalf("Active = %v %s during the outage, want the next key", s, kid)
	}
	// Rotation waits for the store.
	store.setDown(false)
	refresh(t, m)
	if st := m.Status(); !st.StoreReachable || st.LastError != nil {
		t.Fatalf("Status after recovery = %+v", st)
	}
	if n := len(store.records()); n != 2 {
		t.Fatalf("%d records after recovery, want the active key and a new next key", n)
	}

	down := &memStore{down: true}
	if _, err := keyring.New(context.Background(), baseConfig(down, clk.Now)); !errors.Is(err, errDown) {
		t.Fatalf("New with the store down = %v, want its error", err)
	}
}

func TestRecordRefused(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		change func(t *testing.T, r *keyring.Record)
		kek    bool // open with another KEK
	}{
		{name: "wrong KEK", kek: true},
		{name: "seq changed", change: func(t *testing.T, r *keyring.Record) { r.Seq = 7 }},
		{name: "kid changed", change: func(t *testing.T, r *keyring.Record) { r.KeyID = "forged" }},
		{name: "algorithm changed", change: func(t *testing.T, r *keyring.Record) { r.Algorithm = keyring.EdDSA }},
		{name: "unknown algorithm", change: func(t *testing.T, r *keyring.Record) { r.Algorithm = "HS256" }},
		{name: "truncated", change: func(t *testing.T, r *keyring.Record) { r.SealedKey = r.SealedKey[:len(r.SealedKey)-1] }},
		{name: "plain PKCS#8 in a sealed ring", change: func(t *testing.T, r *keyring.Record) { r.SealedKey = []byte{0x30, 0x03, 0x02, 0x01, 0x00} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := keyringtest.NewClock()
			store := &memStore{}
			cfg := baseConfig(store, clk.Now)
			cfg.KEK = keyringtest.NewKEK(t)
			m := newManager(t, cfg)
			k1 := activeKID(m)
			rec := store.records()[0]
			wantSeq, wantKID := rec.Seq, rec.KeyID
			if tc.change != nil {
				store.mu.Lock()
				tc.change(t, &store.recs[0])
				wantSeq, wantKID = store.recs[0].Seq, store.recs[0].KeyID
				store.mu.Unlock()
			}
			if tc.kek {
				cfg.KEK = keyringtest.NewKEK(t)
				m = nil
			}
			if m != nil {
				// A running replica keeps its snapshot and reports.
				clk.Advance(48 * time.Hour) // would rotate, and remove nothing yet
				err := m.Refresh(ctx)
				var re *keyring.RecordError
				if !errors.As(err, &re) || re.Seq != wantSeq || re.KeyID != wantKID {
					t.Fatalf("Refresh = %v, want a RecordError for seq %d kid %s", err, wantSeq, wantKID)
				}
				if got := activeKID(m); got != k1 {
					t.Fatalf("Active = %s, want the previous snapshot's %s", got, k1)
				}
				if st := m.Status(); !st.StoreReachable || st.LastError == nil {
					t.Fatalf("Status = %+v", st)
				}
				if n := len(store.records()); n != 1 {
					t.Fatalf("%d records, want the refused one alone, untouched", n)
				}
			}
			_, err := keyring.New(ctx, cfg)
			var re *keyring.RecordError
			if !errors.As(err, &re) || re.Seq != wantSeq || re.KeyID != wantKID {
				t.Fatalf("New = %v, want a RecordError for seq %d kid %s", err, wantSeq, wantKID)
			}
			want := fmt.Sprintf("keyring: record seq %d kid %q: ", wantSeq, wantKID)
			if got := err.Error(); len(got) <= len(want) || got[:len(want)] != want {
				t.Fatalf("error = %q, want it to start with %q", got, want)
			}
		})
	}
}

func TestRecordRefusedKeyMismatch(t *testing.T) {
	ctx := context.Background()
	clk := keyringtest.NewClock()
	// A ring without KEK, where a record's key is swapped for another one
	// (kid no longer matches) or for a key of another type.
	for _, tc := range []struct {
		name string
		alg  string
		want string
	}{
		{name: "kid does not match", alg: keyring.ES256, want: "kid does not match the key"},
		{name: "wrong key type", alg: keyring.EdDSA, want: "an Ed25519 key cannot sign ES256"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := &memStore{}
			newManager(t, baseConfig(store, clk.Now))
			donor := &memStore{}
			dcfg := baseConfig(donor, clk.Now)
			dcfg.Algorithm = tc.alg
			newManager(t, dcfg)
			store.mu.Lock()
			store.recs[0].SealedKey = donor.records()[0].SealedKey
			store.mu.Unlock()
			_, err := keyring.New(ctx, baseConfig(store, clk.Now))
			var re *keyring.RecordError
			if !errors.As(err, &re) || !bytes.Contains([]byte(re.Err.Error()), []byte(tc.want)) {
				t.Fatalf("New = %v, want a RecordError saying %q", err, tc.want)
			}
		})
	}
}

func TestSealedAtRest(t *testing.T) {
	clk := keyringtest.NewClock()
	store := &memStore{shared: true}
	if _, err := keyring.New(context.Background(), baseConfig(store, clk.Now)); err == nil || err.Error() != "keyring: a shared store needs a key-encryption key" {
		t.Fatalf("New(shared store, no KEK) = %v", err)
	}
	cfg := baseConfig(store, clk.Now)
	cfg.KEK = keyringtest.NewKEK(t)
	m := newManager(t, cfg)
	signer, _, _ := m.Active()
	der, err := x509.MarshalPKCS8PrivateKey(signer)
	if err != nil {
		t.Fatal(err)
	}
	if sealed := store.records()[0].SealedKey; bytes.Contains(sealed, der[len(der)-32:]) {
		t.Fatal("the store holds the private key in the clear")
	}
}

func TestAlgorithmChange(t *testing.T) {
	clk := keyringtest.NewClock()
	store := &memStore{}
	newManager(t, baseConfig(store, clk.Now))
	cfg := baseConfig(store, clk.Now)
	cfg.Algorithm = keyring.EdDSA
	m := newManager(t, cfg)
	recs := store.records()
	if len(recs) != 2 || recs[1].Algorithm != keyring.EdDSA || !recs[1].Activate.Equal(t0.Add(10*time.Minute)) {
		t.Fatalf("records = %+v, want an EdDSA next key at %s", recs, t0.Add(10*time.Minute))
	}
	clk.Advance(10 * time.Minute)
	if _, _, alg := m.Active(); alg != keyring.EdDSA {
		t.Fatalf("Active alg = %s, want EdDSA", alg)
	}
}

func TestRunFollowsStore(t *testing.T) {
	clk := keyringtest.NewClock()
	store := &memStore{}
	cfg := baseConfig(store, clk.Now)
	cfg.RefreshInterval = time.Millisecond
	m := newManager(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	changed := m.Changed()
	info, err := keyring.Rotate(context.Background(), baseConfig(store, clk.Now))
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not pick up a rotation made by another process")
	}
	if got := published(m); got[info.KeyID] != keyring.StateNext {
		t.Fatalf("Published = %v, want %s next", got, info.KeyID)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
}

func TestConfigErrors(t *testing.T) {
	clk := keyringtest.NewClock()
	for _, tc := range []struct {
		name     string
		override func(*keyring.Config)
		want     string
	}{
		{name: "no store", override: func(c *keyring.Config) { c.Store = nil }, want: "keyring: Store is required"},
		{name: "no KeyID", override: func(c *keyring.Config) { c.KeyID = nil }, want: "keyring: KeyID is required"},
		{name: "bad algorithm", override: func(c *keyring.Config) { c.Algorithm = "HS256" }, want: `keyring: unsupported algorithm "HS256" (want ES256, EdDSA or RS256)`},
		{name: "no MaxTokenTTL", override: func(c *keyring.Config) { c.MaxTokenTTL = 0 }, want: "keyring: MaxTokenTTL must be positive"},
		{name: "window too long", override: func(c *keyring.Config) { c.PublicationWindow = 24 * time.Hour }, want: "keyring: RotationPeriod (24h0m0s) must be longer than PublicationWindow (24h0m0s)"},
		{name: "negative refresh", override: func(c *keyring.Config) { c.RefreshInterval = -1 }, want: "keyring: RefreshInterval must be positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := baseConfig(&memStore{}, clk.Now)
			tc.override(&cfg)
			if _, err := keyring.New(context.Background(), cfg); err == nil || err.Error() != tc.want {
				t.Fatalf("New = %v, want %q", err, tc.want)
			}
		})
	}
}
