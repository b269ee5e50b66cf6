package keyring_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/spiffe-sts/spiffe-sts/issuer/keyring"
	"github.com/spiffe-sts/spiffe-sts/issuer/keyring/seal"
)

// t0 is the fake clock's start.
var t0 = time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)

// fakeClock is a settable clock shared by the managers of a test.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *fakeClock { return &fakeClock{now: t0} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

func (c *fakeClock) Advance(d time.Duration) { c.Set(c.Now().Add(d)) }

// skewed returns c's time offset by d, as seen by a replica whose clock is
// off by d.
func (c *fakeClock) skewed(d time.Duration) func() time.Time {
	return func() time.Time { return c.Now().Add(d) }
}

// testKeyID stands in for the RFC 7638 thumbprint: any stable function of
// the public key serves the ring.
func testKeyID(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(der)
	return base64.RawURLEncoding.EncodeToString(sum[:]), nil
}

func newKEK(t *testing.T) *seal.KEK {
	t.Helper()
	b := make([]byte, seal.KEKSize)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	k, err := seal.NewKEK(b)
	if err != nil {
		t.Fatal(err)
	}
	return k
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
		KeyID:     testKeyID,
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
