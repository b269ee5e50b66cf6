package keyring

import (
	"cmp"
	"context"
	"crypto"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe-sts/spiffe-sts/issuer/keyring/seal"
)

const (
	// DefaultRefreshInterval is how often Run polls the store.
	DefaultRefreshInterval = 2 * time.Second
	// refreshTimeout bounds one refresh, so that a hung store cannot hold
	// the ring's lock for long.
	refreshTimeout = 10 * time.Second
	// skewAllowance backdates the Activate time of a key that must sign at
	// once (the first key of a ring, the replacement of a withdrawn active
	// key), so that a replica whose clock is a little behind does not see
	// it as next.
	skewAllowance = 30 * time.Second
	// attempts bounds the reload-and-retry loops after ErrConflict.
	attempts = 5
)

// Config configures a Manager and the package-level ring operations.
type Config struct {
	// Store keeps the records. Required.
	Store Store
	// KEK seals private keys at rest. Required when Store is a
	// SharedStore; when nil, keys are stored as plain PKCS#8 (only for a
	// store that is a file readable by its owner alone).
	KEK *seal.KEK
	// KeyID computes a key's "kid": the RFC 7638 JWK thumbprint of its
	// public key. Required (the caller supplies it, so this package needs
	// no JOSE library).
	KeyID func(crypto.PublicKey) (string, error)
	// Algorithm is the signing algorithm of new keys: ES256, EdDSA or
	// RS256. Required.
	Algorithm string
	// Schedule sets rotation, publication and retirement times.
	Schedule
	// RefreshInterval is how often Run polls the store
	// (DefaultRefreshInterval when zero).
	RefreshInterval time.Duration
	// Clock returns the current time (time.Now when nil).
	Clock func() time.Time
	// Legacy keys (see ReadLegacyKeys) are imported when the ring is
	// empty: the one of Algorithm becomes active, the others retired.
	Legacy []LegacyKey
}

func (c Config) withDefaults() (Config, error) {
	if c.Store == nil {
		return c, errors.New("keyring: Store is required")
	}
	if c.KeyID == nil {
		return c, errors.New("keyring: KeyID is required")
	}
	if _, err := ParseAlgorithm(c.Algorithm); err != nil {
		return c, err
	}
	if s, ok := c.Store.(SharedStore); ok && s.Shared() && c.KEK == nil {
		return c, errors.New("keyring: a shared store needs a key-encryption key")
	}
	var err error
	if c.Schedule, err = c.Schedule.withDefaults(); err != nil {
		return c, err
	}
	if c.RefreshInterval == 0 {
		c.RefreshInterval = DefaultRefreshInterval
	} else if c.RefreshInterval < 0 {
		return c, errors.New("keyring: RefreshInterval must be positive")
	}
	if c.Clock == nil {
		c.Clock = time.Now
	}
	return c, nil
}

// now returns the clock's time as stored: UTC, microseconds, no monotonic
// reading (PostgreSQL keeps microseconds).
func (c Config) now() time.Time {
	return c.Clock().UTC().Truncate(time.Microsecond)
}

// KeyInfo describes a record for listing (`spiffe-sts keys list`).
type KeyInfo struct {
	Seq       int64
	KeyID     string
	Algorithm string
	State     State
	Created   time.Time
	Activate  time.Time
	Revoked   time.Time
}

// PublicKey is a key of the published set (the JWKS).
type PublicKey struct {
	KeyID     string
	Algorithm string
	Public    crypto.PublicKey
	// State is StateNext, StateActive or StateRetired.
	State    State
	Activate time.Time
}

// List returns every record of the ring in cfg.Store with its state at
// cfg.Clock, by Seq. It opens no key, so it needs no KEK.
func List(ctx context.Context, cfg Config) ([]KeyInfo, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	recs, err := cfg.Store.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("keyring: list: %w", err)
	}
	return describe(cfg.Schedule, recs, cfg.now()), nil
}

func describe(s Schedule, recs []Record, now time.Time) []KeyInfo {
	states := s.States(recs, now)
	infos := make([]KeyInfo, len(recs))
	for i, r := range recs {
		infos[i] = KeyInfo{Seq: r.Seq, KeyID: r.KeyID, Algorithm: r.Algorithm, State: states[i], Created: r.Created, Activate: r.Activate, Revoked: r.Revoked}
	}
	slices.SortFunc(infos, func(a, b KeyInfo) int { return cmp.Compare(a.Seq, b.Seq) })
	return infos
}

// Rotate forces a rotation (`spiffe-sts keys rotate`): it creates a key of
// cfg.Algorithm now that starts signing after the publication window, like
// a scheduled next key. It opens no existing key.
func Rotate(ctx context.Context, cfg Config) (KeyInfo, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return KeyInfo{}, err
	}
	return ring{cfg}.rotate(ctx)
}

// Revoke withdraws the key kid now (`spiffe-sts keys revoke KID`, a
// compromise response): it leaves the published set at once and never
// signs again. If it is the active key, a replacement becomes active
// first: the next key published longest, promoted to sign now, or else a
// new key. A replacement that was never published means verifiers see an
// unknown kid once and refetch the JWKS. It opens no existing key, so a
// ring with a damaged record can still be revoked from. An unknown kid is
// an error wrapping ErrNotFound.
func Revoke(ctx context.Context, cfg Config, kid string) error {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return err
	}
	return ring{cfg}.revoke(ctx, kid)
}

// ring holds the store operations shared by the Manager and the
// package-level functions.
type ring struct{ cfg Config }

// create generates a key that signs from activate and inserts it with
// Seq = max+1 of recs. It returns an error wrapping ErrConflict when
// another writer took that Seq first.
func (g ring) create(ctx context.Context, recs []Record, activate time.Time) (Record, crypto.Signer, error) {
	key, err := generateKey(g.cfg.Algorithm)
	if err != nil {
		return Record{}, nil, err
	}
	return g.insert(ctx, recs, g.cfg.Algorithm, key, g.cfg.now(), activate)
}

func (g ring) insert(ctx context.Context, recs []Record, alg string, key crypto.Signer, created, activate time.Time) (Record, crypto.Signer, error) {
	var seq int64 = 1
	for _, r := range recs {
		seq = max(seq, r.Seq+1)
	}
	kid, err := g.cfg.KeyID(key.Public())
	if err != nil {
		return Record{}, nil, fmt.Errorf("keyring: key ID: %w", err)
	}
	sealed, err := sealKey(g.cfg.KEK, seq, kid, alg, key)
	if err != nil {
		return Record{}, nil, fmt.Errorf("keyring: seal: %w", err)
	}
	r := Record{Seq: seq, KeyID: kid, Algorithm: alg, Created: created.UTC().Truncate(time.Microsecond), Activate: activate, SealedKey: sealed}
	if err := g.cfg.Store.Insert(ctx, r); err != nil {
		return Record{}, nil, fmt.Errorf("keyring: insert seq %d: %w", seq, err)
	}
	return r, key, nil
}

// createRetrying creates a key at activate(now), reloading and retrying
// when another writer takes the Seq.
func (g ring) createRetrying(ctx context.Context, activate func(recs []Record, now time.Time) time.Time) (Record, error) {
	for range attempts {
		recs, err := g.cfg.Store.List(ctx)
		if err != nil {
			return Record{}, fmt.Errorf("keyring: list: %w", err)
		}
		r, _, err := g.create(ctx, recs, activate(recs, g.cfg.now()))
		if errors.Is(err, ErrConflict) {
			continue
		}
		return r, err
	}
	return Record{}, fmt.Errorf("keyring: %d inserts in a row lost to other writers", attempts)
}

func (g ring) rotate(ctx context.Context) (KeyInfo, error) {
	r, err := g.createRetrying(ctx, func(_ []Record, now time.Time) time.Time {
		return now.Add(g.cfg.PublicationWindow)
	})
	if err != nil {
		return KeyInfo{}, err
	}
	return KeyInfo{Seq: r.Seq, KeyID: r.KeyID, Algorithm: r.Algorithm, State: StateNext, Created: r.Created, Activate: r.Activate}, nil
}

// immediate returns the Activate time of a key that must sign at once:
// now less skewAllowance, but after every key that has activated, so that
// it is the active one.
func immediate(recs []Record, now time.Time) time.Time {
	at := now.Add(-skewAllowance)
	for _, r := range recs {
		if !r.Activate.After(now) && !r.Activate.Before(at) {
			at = r.Activate.Add(time.Microsecond)
		}
	}
	return at
}

func (g ring) revoke(ctx context.Context, kid string) error {
	recs, err := g.cfg.Store.List(ctx)
	if err != nil {
		return fmt.Errorf("keyring: list: %w", err)
	}
	now := g.cfg.now()
	states := g.cfg.States(recs, now)
	i := slices.IndexFunc(recs, func(r Record) bool { return r.KeyID == kid })
	if i < 0 {
		return fmt.Errorf("keyring: revoke %q: %w", kid, ErrNotFound)
	}
	if states[i] == StateActive {
		// Replace first, so that some key is active at every moment.
		next := -1
		for j, st := range states {
			if st == StateNext && (next < 0 || recs[j].Seq < recs[next].Seq) {
				next = j
			}
		}
		if next >= 0 {
			if err := g.cfg.Store.Promote(ctx, recs[next].KeyID, immediate(recs, now)); err != nil {
				return fmt.Errorf("keyring: promote seq %d: %w", recs[next].Seq, err)
			}
		} else if _, err := g.createRetrying(ctx, immediate); err != nil {
			return err
		}
	}
	if err := g.cfg.Store.Revoke(ctx, kid, now); err != nil {
		return fmt.Errorf("keyring: revoke seq %d: %w", recs[i].Seq, err)
	}
	return nil
}

// importLegacy inserts legacy keys into an empty ring: the key of
// cfg.Algorithm (or a new one) active now, the others retired. Losing a
// race to another importer is not an error.
func (g ring) importLegacy(ctx context.Context, now time.Time) error {
	type item struct {
		alg      string
		key      crypto.Signer
		created  time.Time
		activate time.Time
	}
	var signing *item
	var others []item
	for _, l := range g.cfg.Legacy {
		if _, err := ParseAlgorithm(l.Algorithm); err != nil {
			return err
		}
		if err := checkKey(l.Algorithm, l.Key); err != nil {
			return fmt.Errorf("keyring: legacy %s key: %w", l.Algorithm, err)
		}
		it := item{alg: l.Algorithm, key: l.Key, created: l.Created, activate: now.Add(-skewAllowance - time.Second)}
		if l.Algorithm == g.cfg.Algorithm && signing == nil {
			it.activate = now.Add(-skewAllowance)
			signing = &it
		} else {
			others = append(others, it)
		}
	}
	if signing == nil {
		key, err := generateKey(g.cfg.Algorithm)
		if err != nil {
			return err
		}
		signing = &item{alg: g.cfg.Algorithm, key: key, created: now, activate: now.Add(-skewAllowance)}
	}
	// The signing key goes first: a crash part way leaves a ring whose
	// active key is the right one.
	var recs []Record
	for _, it := range append([]item{*signing}, others...) {
		r, _, err := g.insert(ctx, recs, it.alg, it.key, it.created, it.activate)
		if errors.Is(err, ErrConflict) {
			return nil // another replica is importing the same files
		}
		if err != nil {
			return err
		}
		recs = append(recs, r)
	}
	return nil
}

// Status is the health of a Manager's view of the ring.
type Status struct {
	// LastRefresh is the Clock time of the last successful refresh.
	LastRefresh time.Time
	// LastError is the error of the last refresh; nil if it succeeded.
	LastError error
	// StoreReachable is false when the last refresh could not read or
	// write the store. The Manager keeps signing with its snapshot then.
	StoreReachable bool
}

// Manager keeps a replica's view of the ring and rotates it. It publishes
// an immutable snapshot of the opened keys: signing (Active) and the JWKS
// (Published) read it from memory and never touch the store. Run polls
// the store, creates next keys when due and deletes removed ones; every
// replica does the same, and races are settled by the store (ErrConflict).
type Manager struct {
	ring
	snap atomic.Pointer[snapshot]

	mu     sync.Mutex // serializes refreshes; guards opened
	opened map[string]crypto.Signer

	stMu    sync.Mutex // guards the fields below
	status  Status
	view    string
	version uint64
	changed chan struct{}
}

// snapshot is an opened ring, by Seq, with the schedule its states are
// computed with (which SetMaxTokenTTL can change).
type snapshot struct {
	records []Record // SealedKey dropped
	signers []crypto.Signer
	sched   Schedule
}

// New loads the ring from cfg.Store, blocking on the store: it imports
// cfg.Legacy or creates the first key when the ring is empty, then opens
// every record. It fails when the store is unreachable, when a record does
// not open (a *RecordError naming it) or when no key is active; the
// caller is then not ready. Call Run to keep the ring fresh.
func New(ctx context.Context, cfg Config) (*Manager, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	m := &Manager{ring: ring{cfg}, opened: map[string]crypto.Signer{}, changed: make(chan struct{})}
	m.mu.Lock()
	defer m.mu.Unlock()
	recs, err := cfg.Store.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("keyring: list: %w", err)
	}
	if len(recs) == 0 && len(cfg.Legacy) > 0 {
		if err := m.importLegacy(ctx, cfg.now()); err != nil {
			return nil, err
		}
	}
	if err := m.refreshLocked(ctx); err != nil {
		return nil, err
	}
	if s, _, _ := m.Active(); s == nil {
		return nil, errors.New("keyring: no active key")
	}
	m.record(nil)
	return m, nil
}

// Run refreshes the ring every RefreshInterval until ctx is done, and
// returns nil then. Refresh errors are reported by Status.
func (m *Manager) Run(ctx context.Context) error {
	t := time.NewTicker(m.cfg.RefreshInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			rctx, cancel := context.WithTimeout(ctx, refreshTimeout)
			_ = m.Refresh(rctx)
			cancel()
		}
	}
}

// Refresh reads the ring, applies the plan (create the next key when due,
// delete removed keys) and publishes the new snapshot. On error the
// previous snapshot stays: signing goes on with the in-memory active key.
func (m *Manager) Refresh(ctx context.Context) error {
	m.mu.Lock()
	err := m.refreshLocked(ctx)
	m.mu.Unlock()
	m.record(err)
	return err
}

func (m *Manager) refreshLocked(ctx context.Context) error {
	for range attempts {
		recs, err := m.cfg.Store.List(ctx)
		if err != nil {
			return fmt.Errorf("keyring: list: %w", err)
		}
		if err := m.load(recs); err != nil {
			return err
		}
		now := m.cfg.now()
		plan := m.cfg.Plan(recs, now, m.cfg.Algorithm)
		for _, r := range plan.Delete {
			if err := m.cfg.Store.Delete(ctx, r.KeyID); err != nil && !errors.Is(err, ErrNotFound) {
				return fmt.Errorf("keyring: delete seq %d: %w", r.Seq, err)
			}
		}
		if !plan.Create {
			return nil
		}
		activate := plan.Activate
		if activate.Equal(now) { // the first key: sign at once
			activate = immediate(recs, now)
		}
		if _, _, err := m.create(ctx, recs, activate); err != nil && !errors.Is(err, ErrConflict) {
			return err
		}
		// Created, or another replica won: reload and adopt.
	}
	return fmt.Errorf("keyring: the ring still needs a key after %d attempts", attempts)
}

// load opens every record (reusing keys opened before) and publishes the
// snapshot. Any record that does not open fails the load, and the
// previous snapshot stays.
func (m *Manager) load(recs []Record) error {
	recs = slices.Clone(recs)
	slices.SortFunc(recs, func(a, b Record) int { return cmp.Compare(a.Seq, b.Seq) })
	opened := make(map[string]crypto.Signer, len(recs))
	signers := make([]crypto.Signer, len(recs))
	for i, r := range recs {
		ck := strconv.FormatInt(r.Seq, 10) + "\x00" + r.KeyID + "\x00" + r.Algorithm + "\x00" + string(r.SealedKey)
		s, ok := m.opened[ck]
		if !ok {
			var err error
			if s, err = openRecord(m.cfg.KEK, m.cfg.KeyID, r); err != nil {
				return err
			}
		}
		opened[ck] = s
		signers[i] = s
		recs[i].SealedKey = nil
	}
	m.opened = opened
	m.snap.Store(&snapshot{records: recs, signers: signers, sched: m.cfg.Schedule})
	return nil
}

// record updates Status and signals Changed when the published set or a
// state changed.
func (m *Manager) record(err error) {
	var b strings.Builder
	for _, k := range m.Published() {
		b.WriteString(k.KeyID + "=" + k.State.String() + ";")
	}
	m.stMu.Lock()
	defer m.stMu.Unlock()
	m.status.LastError = err
	var re *RecordError
	m.status.StoreReachable = err == nil || errors.As(err, &re)
	if err == nil {
		m.status.LastRefresh = m.cfg.Clock()
	}
	if v := b.String(); v != m.view {
		m.view = v
		m.version++
		close(m.changed)
		m.changed = make(chan struct{})
	}
}

// Active returns the key that signs now, its kid and its algorithm: the
// non-revoked key with the greatest Activate <= now. It reads memory only
// (and the clock, so that a next key takes over at its Activate time
// without a refresh). The signer is nil only if no key is active.
func (m *Manager) Active() (signer crypto.Signer, kid, alg string) {
	s := m.snap.Load()
	now := m.cfg.Clock()
	best := -1
	for i, r := range s.records {
		if !r.Revoked.IsZero() || r.Activate.After(now) {
			continue
		}
		if best < 0 || compareRecords(r, s.records[best]) > 0 {
			best = i
		}
	}
	if best < 0 {
		return nil, "", ""
	}
	r := s.records[best]
	return s.signers[best], r.KeyID, r.Algorithm
}

// Published returns the keys to publish in the JWKS now (next, active and
// retired), by Seq. It reads memory only.
func (m *Manager) Published() []PublicKey {
	s := m.snap.Load()
	states := s.sched.States(s.records, m.cfg.Clock())
	var keys []PublicKey
	for i, r := range s.records {
		if states[i].Published() {
			keys = append(keys, PublicKey{KeyID: r.KeyID, Algorithm: r.Algorithm, Public: s.signers[i].Public(), State: states[i], Activate: r.Activate})
		}
	}
	return keys
}

// Keys describes every record of the snapshot with its state now.
func (m *Manager) Keys() []KeyInfo {
	s := m.snap.Load()
	return describe(s.sched, s.records, m.cfg.Clock())
}

// SetMaxTokenTTL raises the Schedule's MaxTokenTTL to d, for an issuer
// whose policy now allows longer tokens, so that retired keys stay
// published until those tokens expire. It never lowers it: tokens minted
// under the old maximum may still be live. It takes effect at once for
// Published and Keys, and for the plan at the next refresh.
func (m *Manager) SetMaxTokenTTL(d time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if d <= m.cfg.MaxTokenTTL {
		return
	}
	m.cfg.MaxTokenTTL = d
	s := *m.snap.Load()
	s.sched = m.cfg.Schedule
	m.snap.Store(&s)
}

// MaxTokenTTL returns the Schedule's MaxTokenTTL.
func (m *Manager) MaxTokenTTL() time.Duration { return m.snap.Load().sched.MaxTokenTTL }

// Changed returns a channel that is closed at the next change of the
// published set or of a key's state (noticed at a refresh); call it again
// after each close. Use it to rebuild the JWKS.
func (m *Manager) Changed() <-chan struct{} {
	m.stMu.Lock()
	defer m.stMu.Unlock()
	return m.changed
}

// Version counts changes of the published set or of a key's state.
func (m *Manager) Version() uint64 {
	m.stMu.Lock()
	defer m.stMu.Unlock()
	return m.version
}

// Status returns the health of the last refresh.
func (m *Manager) Status() Status {
	m.stMu.Lock()
	defer m.stMu.Unlock()
	return m.status
}

// Rotate forces a rotation through the Manager (see the package-level
// Rotate) and refreshes.
func (m *Manager) Rotate(ctx context.Context) (KeyInfo, error) {
	m.mu.Lock()
	info, err := m.rotate(ctx)
	if err == nil {
		err = m.refreshLocked(ctx)
	}
	m.mu.Unlock()
	m.record(err)
	return info, err
}

// Revoke withdraws kid through the Manager (see the package-level Revoke)
// and refreshes.
func (m *Manager) Revoke(ctx context.Context, kid string) error {
	m.mu.Lock()
	err := m.revoke(ctx, kid)
	if err == nil {
		err = m.refreshLocked(ctx)
	}
	m.mu.Unlock()
	if !errors.Is(err, ErrNotFound) {
		m.record(err)
	}
	return err
}
