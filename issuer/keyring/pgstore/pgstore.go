package pgstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/spiffe-sts/spiffe-sts/issuer/keyring"
)

// migrationLock is the pg_advisory_xact_lock key of migrations: "sts" +
// "keyring" as a constant of our own, unlikely to meet another
// application's.
const migrationLock int64 = 0x5354534b4559

// migrations are the schema versions, in order: migrations[i] takes the
// schema to version i+1. Never edit a released one; append.
// KeysTable is the table that holds the key ring, one row per key.
const KeysTable = "spiffe_sts_keys"

var migrations = []string{
	`CREATE TABLE spiffe_sts_keys (
		seq        bigint      PRIMARY KEY,
		kid        text        NOT NULL UNIQUE,
		alg        text        NOT NULL,
		created    timestamptz NOT NULL,
		activate   timestamptz NOT NULL,
		revoked    timestamptz,
		sealed_key bytea       NOT NULL
	)`,
}

// uniqueViolation is PostgreSQL's SQLSTATE for a duplicate key.
const uniqueViolation = "23505"

// Store is a keyring.Store in PostgreSQL.
type Store struct {
	pool *pgxpool.Pool
}

var _ keyring.SharedStore = (*Store)(nil)

// Open connects to the database at dsn (a PostgreSQL URL or key=value
// string, see pgxpool.ParseConfig), blocking until it answers, and
// migrates its schema.
func Open(ctx context.Context, dsn string) (*Store, error) {
	cfg, err := pgxpool.ParseConfig(dsn)
	if err != nil {
		return nil, fmt.Errorf("pgstore: connection string: %w", err)
	}
	return OpenConfig(ctx, cfg)
}

// OpenConfig is Open with a parsed pool configuration. Unless cfg sets
// ShouldPing, a pooled connection is checked before each use, so that the
// first refresh after a database restart finds a live connection rather
// than one the server closed (one round trip every refresh, a few times a
// second across replicas at most).
func OpenConfig(ctx context.Context, cfg *pgxpool.Config) (*Store, error) {
	if cfg.ShouldPing == nil {
		cfg.ShouldPing = func(context.Context, pgxpool.ShouldPingParams) bool { return true }
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("pgstore: %w", err)
	}
	s := &Store{pool: pool}
	if err := s.migrate(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the pool.
func (s *Store) Close() { s.pool.Close() }

// Shared reports that the database is shared by replicas: the Manager
// requires a key-encryption key.
func (s *Store) Shared() bool { return true }

// SchemaVersion is the schema version this binary migrates to.
func SchemaVersion() int { return len(migrations) }

func (s *Store) migrate(ctx context.Context) error {
	return pgx.BeginFunc(ctx, s.pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, migrationLock); err != nil {
			return fmt.Errorf("pgstore: migration lock: %w", err)
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS spiffe_sts_schema_migrations (
			version integer     PRIMARY KEY,
			applied timestamptz NOT NULL DEFAULT now()
		)`); err != nil {
			return fmt.Errorf("pgstore: create migrations table: %w", err)
		}
		var current int
		if err := tx.QueryRow(ctx, `SELECT COALESCE(max(version), 0) FROM spiffe_sts_schema_migrations`).Scan(&current); err != nil {
			return fmt.Errorf("pgstore: read schema version: %w", err)
		}
		if current > len(migrations) {
			return fmt.Errorf("pgstore: schema version %d is newer than this binary's %d", current, len(migrations))
		}
		for v := current + 1; v <= len(migrations); v++ {
			if _, err := tx.Exec(ctx, migrations[v-1]); err != nil {
				return fmt.Errorf("pgstore: migration %d: %w", v, err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO spiffe_sts_schema_migrations (version) VALUES ($1)`, v); err != nil {
				return fmt.Errorf("pgstore: record migration %d: %w", v, err)
			}
		}
		return nil
	})
}

// List returns every record.
func (s *Store) List(ctx context.Context) ([]keyring.Record, error) {
	rows, err := s.pool.Query(ctx, `SELECT seq, kid, alg, created, activate, revoked, sealed_key FROM spiffe_sts_keys`)
	if err != nil {
		return nil, fmt.Errorf("pgstore: list: %w", err)
	}
	recs, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (keyring.Record, error) {
		var r keyring.Record
		var revoked *time.Time
		err := row.Scan(&r.Seq, &r.KeyID, &r.Algorithm, &r.Created, &r.Activate, &revoked, &r.SealedKey)
		if revoked != nil {
			r.Revoked = *revoked
		}
		return r, err
	})
	if err != nil {
		return nil, fmt.Errorf("pgstore: list: %w", err)
	}
	return recs, nil
}

// Insert adds r, or returns keyring.ErrConflict when its seq or kid is
// taken.
func (s *Store) Insert(ctx context.Context, r keyring.Record) error {
	var revoked *time.Time
	if !r.Revoked.IsZero() {
		revoked = &r.Revoked
	}
	_, err := s.pool.Exec(ctx, `INSERT INTO spiffe_sts_keys (seq, kid, alg, created, activate, revoked, sealed_key)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`, r.Seq, r.KeyID, r.Algorithm, r.Created, r.Activate, revoked, r.SealedKey)
	if pgErr, ok := errors.AsType[*pgconn.PgError](err); ok && pgErr.Code == uniqueViolation {
		return fmt.Errorf("pgstore: insert seq %d: %w", r.Seq, keyring.ErrConflict)
	}
	if err != nil {
		return fmt.Errorf("pgstore: insert seq %d: %w", r.Seq, err)
	}
	return nil
}

// Revoke sets revoked for kid, keeping an earlier revocation.
func (s *Store) Revoke(ctx context.Context, kid string, at time.Time) error {
	return s.exec(ctx, "revoke", kid, `UPDATE spiffe_sts_keys SET revoked = COALESCE(revoked, $2) WHERE kid = $1`, kid, at)
}

// Promote moves kid's activate back to at if at is earlier.
func (s *Store) Promote(ctx context.Context, kid string, at time.Time) error {
	return s.exec(ctx, "promote", kid, `UPDATE spiffe_sts_keys SET activate = LEAST(activate, $2) WHERE kid = $1`, kid, at)
}

// Delete removes kid.
func (s *Store) Delete(ctx context.Context, kid string) error {
	return s.exec(ctx, "delete", kid, `DELETE FROM spiffe_sts_keys WHERE kid = $1`, kid)
}

// exec runs a statement on one row by kid; no row is keyring.ErrNotFound.
func (s *Store) exec(ctx context.Context, op, kid, sql string, args ...any) error {
	tag, err := s.pool.Exec(ctx, sql, args...)
	if err != nil {
		return fmt.Errorf("pgstore: %s %q: %w", op, kid, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("pgstore: %s %q: %w", op, kid, keyring.ErrNotFound)
	}
	return nil
}
