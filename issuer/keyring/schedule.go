package keyring

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// State is where a key is in its life. It is derived from a Record's
// times and the current time, never stored.
type State int

const (
	// StateNext: published, not signing yet (now < Activate). SPIRE calls
	// this the "prepared" slot (spiffe/spire pkg/server/ca/manager/slot.go).
	StateNext State = iota + 1
	// StateActive: the non-revoked key with the greatest Activate <= now
	// (ties broken by the greater Seq); it signs.
	StateActive
	// StateRetired: published, no longer signing, until the last token it
	// can have signed has expired: until its successor's Activate +
	// MaxTokenTTL + Leeway.
	StateRetired
	// StateRemoved: past retirement; no longer published, and the Manager
	// deletes its record.
	StateRemoved
	// StateRevoked: withdrawn; never published, never signs, whatever its
	// times say.
	StateRevoked
)

// String returns the state's name: "next", "active", "retired", "removed"
// or "revoked".
func (s State) String() string {
	switch s {
	case StateNext:
		return "next"
	case StateActive:
		return "active"
	case StateRetired:
		return "retired"
	case StateRemoved:
		return "removed"
	case StateRevoked:
		return "revoked"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// MarshalText encodes s as its name, for listings in JSON.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Published reports whether a key in state s belongs in the JWKS.
func (s State) Published() bool {
	return s == StateNext || s == StateActive || s == StateRetired
}

// Default schedule values.
const (
	DefaultRotationPeriod = 24 * time.Hour
	// DefaultPublicationWindow is twice the JWKS Cache-Control max-age
	// of 300s, so that a verifier that refreshes only on expiry has the
	// next key before it signs.
	DefaultPublicationWindow = 10 * time.Minute
	// DefaultLeeway covers verifiers' clock skew on "exp".
	DefaultLeeway = time.Minute
)

// Schedule holds the times that drive the ring. It is pure: its methods
// depend only on the records and the time passed in.
type Schedule struct {
	// RotationPeriod is how long a key signs before its successor takes
	// over (DefaultRotationPeriod when zero).
	RotationPeriod time.Duration
	// PublicationWindow is how long a new key is published before it
	// signs (DefaultPublicationWindow when zero). It must be shorter than
	// RotationPeriod.
	PublicationWindow time.Duration
	// MaxTokenTTL is the longest lifetime of a token the issuer mints; a
	// retired key stays published this long (plus Leeway) after it
	// stopped signing. Required.
	MaxTokenTTL time.Duration
	// Leeway is added to MaxTokenTTL for verifiers' clock skew
	// (DefaultLeeway when zero; negative means none).
	Leeway time.Duration
}

// withDefaults fills zero fields and validates s.
func (s Schedule) withDefaults() (Schedule, error) {
	if s.RotationPeriod == 0 {
		s.RotationPeriod = DefaultRotationPeriod
	}
	if s.PublicationWindow == 0 {
		s.PublicationWindow = DefaultPublicationWindow
	}
	if s.Leeway == 0 {
		s.Leeway = DefaultLeeway
	} else if s.Leeway < 0 {
		s.Leeway = 0
	}
	switch {
	case s.MaxTokenTTL <= 0:
		return s, errors.New("keyring: MaxTokenTTL must be positive")
	case s.PublicationWindow < 0:
		return s, errors.New("keyring: PublicationWindow must be positive")
	case s.RotationPeriod <= s.PublicationWindow:
		return s, fmt.Errorf("keyring: RotationPeriod (%s) must be longer than PublicationWindow (%s)", s.RotationPeriod, s.PublicationWindow)
	}
	return s, nil
}

// States returns the state of each record at now, index for index.
//
// Revoked records are StateRevoked. Of the others, those with Activate
// after now are StateNext; the rest, ordered by (Activate, Seq), are
// StateActive for the last one and, for each earlier one, StateRetired
// while now < Activate of the following one + MaxTokenTTL + Leeway, else
// StateRemoved. Revoked keys are skipped when finding the following key:
// that can only keep a retired key published longer, never shorter.
func (s Schedule) States(records []Record, now time.Time) []State {
	states := make([]State, len(records))
	var activated []int
	for i, r := range records {
		switch {
		case !r.Revoked.IsZero():
			states[i] = StateRevoked
		case r.Activate.After(now):
			states[i] = StateNext
		default:
			activated = append(activated, i)
		}
	}
	slices.SortFunc(activated, func(a, b int) int { return compareRecords(records[a], records[b]) })
	for j, i := range activated {
		if j == len(activated)-1 {
			states[i] = StateActive
			break
		}
		end := records[activated[j+1]].Activate.Add(s.MaxTokenTTL + s.Leeway)
		if now.Before(end) {
			states[i] = StateRetired
		} else {
			states[i] = StateRemoved
		}
	}
	return states
}

// compareRecords orders records by Activate, then Seq.
func compareRecords(a, b Record) int {
	if c := a.Activate.Compare(b.Activate); c != 0 {
		return c
	}
	switch {
	case a.Seq < b.Seq:
		return -1
	case a.Seq > b.Seq:
		return 1
	}
	return 0
}

// Plan is what a ring needs done at some moment.
type Plan struct {
	// Create says a key must be created, to start signing at Activate.
	Create   bool
	Activate time.Time
	// Delete lists the records to delete: removed keys, and revoked keys
	// whose tokens have all expired (Revoked + MaxTokenTTL + Leeway).
	Delete []Record
}

// Plan returns what the ring of records needs at now for keys of alg:
//
//   - no active key (an empty ring): create one active at now; nothing
//     can have cached a JWKS that lacks it;
//   - an active key and no next key, when now >= active.Activate +
//     RotationPeriod - PublicationWindow: create a next key with Activate
//     = max(now + PublicationWindow, active.Activate + RotationPeriod), so
//     that it is published for at least the window before it signs;
//   - an active key of another algorithm than alg and no next key: create
//     a next key at now + PublicationWindow (an algorithm change rotates);
//   - delete removed keys and expired revoked keys.
//
// SPIRE prepares its next key the same way, but keeps two fixed slots;
// here the ring holds any number of keys, each with its own times.
func (s Schedule) Plan(records []Record, now time.Time, alg string) Plan {
	var p Plan
	states := s.States(records, now)
	var active *Record
	hasNext := false
	for i, st := range states {
		r := &records[i]
		switch st {
		case StateActive:
			active = r
		case StateNext:
			hasNext = true
		case StateRemoved:
			p.Delete = append(p.Delete, *r)
		case StateRevoked:
			if !now.Before(r.Revoked.Add(s.MaxTokenTTL + s.Leeway)) {
				p.Delete = append(p.Delete, *r)
			}
		}
	}
	switch {
	case active == nil:
		p.Create, p.Activate = true, now
	case hasNext:
	case active.Algorithm != alg:
		p.Create, p.Activate = true, now.Add(s.PublicationWindow)
	case !now.Before(active.Activate.Add(s.RotationPeriod - s.PublicationWindow)):
		p.Create = true
		p.Activate = now.Add(s.PublicationWindow)
		if due := active.Activate.Add(s.RotationPeriod); due.After(p.Activate) {
			p.Activate = due
		}
	}
	return p
}
