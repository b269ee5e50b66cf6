package keyring_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/spiffe-sts/spiffe-sts/internal/fakeclock"
	"github.com/spiffe-sts/spiffe-sts/issuer/keyring"
	"github.com/spiffe-sts/spiffe-sts/issuer/keyring/internal/keyringtest"
)

// t0 is the fake clock's start.
var t0 = keyringtest.T0

// skewed returns clk's time offset by d, as seen by a replica whose clock
// is off by d.
func skewed(clk *fakeclock.Clock, d time.Duration) func() time.Time {
	return func() time.Time { return clk.Now().Add(d) }
}

// memStore is an in-memory keyring.Store that can be taken down, for
// outage tests, and can run a hook on List, for race tests.
type memStore struct {
	mu     sync.Mutex
	recs   []keyring.Record
	down   bool
	shared bool
	onList func()
}

var errDown = errors.New("memstore: connection refused")

func (s *memStore) setDown(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.down = down
}

func (s *memStore) Shared() bool { return s.shared }

func (s *memStore) List(ctx context.Context) ([]keyring.Record, error) {
	s.mu.Lock()
	hook := s.onList
	if s.down {
		s.mu.Unlock()
		return nil, errDown
	}
	recs := slices.Clone(s.recs)
	s.mu.Unlock()
	if hook != nil {
		hook()
	}
	return recs, nil
}

func (s *memStore) Insert(ctx context.Context, r keyring.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		return errDown
	}
	for _, x := range s.recs {
		if x.Seq == r.Seq || x.KeyID == r.KeyID {
			return fmt.Errorf("memstore: %w", keyring.ErrConflict)
		}
	}
	s.recs = append(s.recs, r)
	return nil
}

func (s *memStore) edit(kid string, f func(*keyring.Record)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		return errDown
	}
	for i := range s.recs {
		if s.recs[i].KeyID == kid {
			f(&s.recs[i])
			return nil
		}
	}
	return fmt.Errorf("memstore: %w", keyring.ErrNotFound)
}

func (s *memStore) Revoke(ctx context.Context, kid string, at time.Time) error {
	return s.edit(kid, func(r *keyring.Record) {
		if r.Revoked.IsZero() {
			r.Revoked = at
		}
	})
}

func (s *memStore) Promote(ctx context.Context, kid string, at time.Time) error {
	return s.edit(kid, func(r *keyring.Record) {
		if at.Before(r.Activate) {
			r.Activate = at
		}
	})
}

func (s *memStore) Delete(ctx context.Context, kid string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		return errDown
	}
	i := slices.IndexFunc(s.recs, func(r keyring.Record) bool { return r.KeyID == kid })
	if i < 0 {
		return fmt.Errorf("memstore: %w", keyring.ErrNotFound)
	}
	s.recs = slices.Delete(s.recs, i, i+1)
	return nil
}

// records returns a copy of the stored records by Seq.
func (s *memStore) records() []keyring.Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	recs := slices.Clone(s.recs)
	slices.SortFunc(recs, func(a, b keyring.Record) int { return int(a.Seq - b.Seq) })
	return recs
}

// baseConfig is the known-good configuration tests start from.
func baseConfig(store keyring.Store, clock func() time.Time) keyring.Config {
	return keyring.Config{
		Store:     store,
		KeyID:     keyringtest.KeyID,
		Algorithm: keyring.ES256,
		Schedule: keyring.Schedule{
			RotationPeriod:    24 * time.Hour,
			PublicationWindow: 10 * time.Minute,
			MaxTokenTTL:       time.Hour,
			Leeway:            time.Minute,
		},
		Clock: clock,
	}
}

func newManager(t *testing.T, cfg keyring.Config) *keyring.Manager {
	t.Helper()
	m, err := keyring.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return m
}

func refresh(t *testing.T, m *keyring.Manager) {
	t.Helper()
	if err := m.Refresh(context.Background()); err != nil {
		t.Fatalf("Refresh: %v", err)
	}
}

func activeKID(m *keyring.Manager) string {
	_, kid, _ := m.Active()
	return kid
}

// published returns the published kids and their states, as "kid=state".
func published(m *keyring.Manager) map[string]keyring.State {
	out := map[string]keyring.State{}
	for _, k := range m.Published() {
		out[k.KeyID] = k.State
	}
	return out
}
