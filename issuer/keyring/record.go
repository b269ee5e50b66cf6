package keyring

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Signing algorithms (RFC 7518 §3.1, RFC 8037 §3.1) a ring key can have.
const (
	ES256 = "ES256"
	EdDSA = "EdDSA"
	RS256 = "RS256"
)

// MinRSABits is the smallest RSA modulus accepted for RS256
// (RFC 7518 §3.3 requires 2048 bits or more).
const MinRSABits = 2048

// Record is one key of the ring as a Store keeps it. Its state is never
// stored: it follows from the recorded times and the current time (see
// Schedule.States), so every replica that reads the same records at the
// same moment agrees on which key signs.
type Record struct {
	// Seq orders the ring; a Store refuses a Seq that is taken, which is
	// what makes concurrent creation race-free (ErrConflict).
	Seq int64
	// KeyID is the key's "kid", the RFC 7638 thumbprint of its public key
	// as computed by Config.KeyID.
	KeyID string
	// Algorithm is ES256, EdDSA or RS256.
	Algorithm string
	// Created is when the key was generated or imported (informational).
	Created time.Time
	// Activate is when the key starts signing. Before it the key is
	// published only ("next").
	Activate time.Time
	// Revoked is when the key was withdrawn; zero unless it was.
	Revoked time.Time
	// SealedKey is the PKCS#8 DER private key, sealed with the ring's
	// key-encryption key (package seal) bound to Seq, KeyID and
	// Algorithm, or the plain DER when the ring has no key-encryption key.
	SealedKey []byte
}

// Store keeps the ring's records. Implementations must be safe for
// concurrent use by several processes (replicas) at once; they store and
// return records verbatim, times to at least microsecond precision.
//
// Like Dex's storage compare-and-swap (dexidp/dex server/rotation.go), one
// conditional write decides races: every replica that wants a new key
// proposes Seq = max+1, one Insert wins and the others get ErrConflict,
// reload and adopt the winner's key.
type Store interface {
	// List returns every record, in any order.
	List(ctx context.Context) ([]Record, error)
	// Insert adds r. It returns an error wrapping ErrConflict when r.Seq
	// or r.KeyID is already in the store, and stores nothing then.
	Insert(ctx context.Context, r Record) error
	// Revoke sets Revoked to at for the record with kid, unless it is
	// already revoked (the first time is kept). It returns an error
	// wrapping ErrNotFound when no record has kid.
	Revoke(ctx context.Context, kid string, at time.Time) error
	// Promote moves the Activate time of the record with kid back to at,
	// if at is earlier than its current Activate; otherwise it changes
	// nothing. It returns an error wrapping ErrNotFound when no record
	// has kid.
	Promote(ctx context.Context, kid string, at time.Time) error
	// Delete removes the record with kid. It returns an error wrapping
	// ErrNotFound when no record has kid.
	Delete(ctx context.Context, kid string) error
}

// SharedStore is implemented by stores that several hosts share, such as
// PostgreSQL. The Manager refuses such a store without a key-encryption
// key, so that a database dump alone yields no signing key.
type SharedStore interface {
	Store
	// Shared reports that the store is reachable by other hosts.
	Shared() bool
}

var (
	// ErrConflict is wrapped by Store.Insert when the record's Seq or
	// KeyID is taken.
	ErrConflict = errors.New("keyring: a record with this seq or kid exists")
	// ErrNotFound is wrapped by Store methods given a kid that no record
	// has.
	ErrNotFound = errors.New("keyring: no record with this kid")
)

// RecordError is the error for a record that fails to decrypt or parse:
// wrong key-encryption key, tampered or copied row, key of the wrong type
// for its algorithm, or a kid that does not match the key. The ring
// refuses such a record; it never overwrites, deletes or skips it.
type RecordError struct {
	Seq   int64
	KeyID string
	Err   error
}

func (e *RecordError) Error() string {
	return fmt.Sprintf("keyring: record seq %d kid %q: %v", e.Seq, e.KeyID, e.Err)
}

func (e *RecordError) Unwrap() error { return e.Err }
