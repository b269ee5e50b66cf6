package pgstore_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/spiffe-sts/spiffe-sts/internal/pgtest"
	"github.com/spiffe-sts/spiffe-sts/issuer/keyring"
	"github.com/spiffe-sts/spiffe-sts/issuer/keyring/internal/keyringtest"
	"github.com/spiffe-sts/spiffe-sts/issuer/keyring/pgstore"
	"github.com/spiffe-sts/spiffe-sts/issuer/keyring/seal"
	"github.com/spiffe-sts/spiffe-sts/issuer/keyring/storetest"
)

// testTimeout bounds every test's database work.
const testTimeout = 60 * time.Second

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

func open(t *testing.T, dsn string) *pgstore.Store {
	t.Helper()
	s, err := pgstore.Open(testContext(t), dsn)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

func TestStore(t *testing.T) {
	c := pgtest.Start(t)
	storetest.Run(t, func(t *testing.T) (keyring.Store, func(t *testing.T) keyring.Store) {
		dsn := c.NewDatabase(t)
		return open(t, dsn), func(t *testing.T) keyring.Store { return open(t, dsn) }
	})

	t.Run("ConcurrentMigrations", func(t *testing.T) {
		dsn := c.NewDatabase(t)
		var wg sync.WaitGroup
		errs := make([]error, 4)
		for i := range errs {
			wg.Go(func() {
				s, err := pgstore.Open(testContext(t), dsn)
				if err == nil {
					s.Close()
				}
				errs[i] = err
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("Open %d: %v", i, err)
			}
		}
		ctx := testContext(t)
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		var n, max int
		if err := conn.QueryRow(ctx, `SELECT count(*), max(version) FROM spiffe_sts_schema_migrations`).Scan(&n, &max); err != nil {
			t.Fatal(err)
		}
		if n != pgstore.SchemaVersion() || max != pgstore.SchemaVersion() {
			t.Fatalf("migrations table has %d rows up to %d, want %d", n, max, pgstore.SchemaVersion())
		}
		// A schema from a newer binary is refused.
		if _, err := conn.Exec(ctx, `INSERT INTO spiffe_sts_schema_migrations (version) VALUES ($1)`, pgstore.SchemaVersion()+1); err != nil {
			t.Fatal(err)
		}
		_, err = pgstore.Open(ctx, dsn)
		if want := "pgstore: schema version 2 is newer than this binary's 1"; err == nil || err.Error() != want {
			t.Fatalf("Open = %v, want %q", err, want)
		}
	})
}

func config(_ testing.TB, store keyring.Store, kek *seal.KEK, clock func() time.Time) keyring.Config {
	return keyring.Config{
		Store:     store,
		KEK:       kek,
		KeyID:     keyringtest.KeyID,
		Algorithm: keyring.ES256,
		Schedule:  keyring.Schedule{RotationPeriod: 24 * time.Hour, MaxTokenTTL: time.Hour},
		Clock:     clock,
	}
}

// TestManager runs the ring on PostgreSQL: it needs a KEK, survives the
// database stopping, and refuses a row edited in the database.
func TestManager(t *testing.T) {
	c := pgtest.Start(t)
	dsn := c.NewDatabase(t)
	store := open(t, dsn)
	ctx := testContext(t)
	clk := keyringtest.NewClock()
	clock := clk.Now

	if _, err := keyring.New(ctx, config(t, store, nil, clock)); err == nil {
		t.Fatal("New accepted PostgreSQL without a key-encryption key")
	}
	kek := keyringtest.NewKEK(t)
	m, err := keyring.New(ctx, config(t, store, kek, clock))
	if err != nil {
		t.Fatal(err)
	}
	other, err := keyring.New(ctx, config(t, open(t, dsn), kek, clock))
	if err != nil {
		t.Fatal(err)
	}
	_, k1, _ := m.Active()
	if _, k, _ := other.Active(); k != k1 {
		t.Fatalf("replicas disagree: %s and %s", k1, k)
	}

	// Outage: signing goes on, Status says so, rotation waits.
	c.Stop(t)
	clk.Advance(24 * time.Hour)
	if err := m.Refresh(ctx); err == nil {
		t.Fatal("Refresh succeeded with the database stopped")
	}
	if st := m.Status(); st.StoreReachable {
		t.Fatalf("Status = %+v, want unreachable", st)
	}
	if s, k, _ := m.Active(); s == nil || k != k1 {
		t.Fatalf("Active during the outage = %v %s, want %s", s, k, k1)
	}
	if _, err := keyring.New(ctx, config(t, store, kek, clock)); err == nil {
		t.Fatal("New succeeded with the database stopped")
	}
	c.Start(t)
	if err := m.Refresh(ctx); err != nil {
		t.Fatalf("Refresh after restart: %v", err)
	}
	if err := other.Refresh(ctx); err != nil {
		t.Fatalf("Refresh after restart: %v", err)
	}
	pub := other.Published()
	if len(pub) != 2 {
		t.Fatalf("Published = %+v, want the active key and the next key created after the outage", pub)
	}

	// A row edited in the database is refused, by seq and kid, and kept.
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `UPDATE spiffe_sts_keys SET alg = 'EdDSA' WHERE kid = $1`, k1); err != nil {
		t.Fatal(err)
	}
	err = m.Refresh(ctx)
	var re *keyring.RecordError
	if !errors.As(err, &re) || re.KeyID != k1 || re.Seq != 1 {
		t.Fatalf("Refresh = %v, want a RecordError for seq 1 kid %s", err, k1)
	}
	if _, k, _ := m.Active(); k != k1 {
		t.Fatalf("Active = %s, want the previous snapshot's %s", k, k1)
	}
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM spiffe_sts_keys`).Scan(&n); err != nil || n != 2 {
		t.Fatalf("%d rows (%v), want both kept", n, err)
	}
}

// BenchmarkRefresh measures a refresh (every refresh_interval) of a ring
// of four sealed keys in PostgreSQL: one SELECT over a local socket,
// reuse of the opened keys, plan.
func BenchmarkRefresh(b *testing.B) {
	c := pgtest.Start(b)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	b.Cleanup(cancel)
	store, err := pgstore.Open(ctx, c.NewDatabase(b))
	if err != nil {
		b.Fatalf("Open: %v", err)
	}
	b.Cleanup(store.Close)
	keyringtest.BenchRefresh(b, config(b, store, keyringtest.NewKEK(b), keyringtest.NewClock().Now), 4)
}
