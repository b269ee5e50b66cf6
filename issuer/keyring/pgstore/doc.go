// Package pgstore is the keyring.Store for several replicas: the ring in
// PostgreSQL, through pgx's connection pool, in plain SQL.
//
//	store, err := pgstore.Open(ctx, "postgres://spiffe_sts@db.example.org/spiffe_sts")
//	if err != nil {
//		return err
//	}
//	defer store.Close()
//	m, err := keyring.New(ctx, keyring.Config{Store: store, KEK: kek, ...})
//
// Open applies the schema migrations this binary knows, in one transaction
// guarded by pg_advisory_xact_lock so that replicas starting together
// apply each exactly once, and records them in spiffe_sts_schema_migrations.
// A database migrated by a newer binary is refused.
//
// The keys live in spiffe_sts_keys, with seq as primary key and kid
// unique: an insert that collides on either returns keyring.ErrConflict,
// which settles concurrent next-key creation. The store is shared, so the
// keyring.Manager requires a key-encryption key with it: the table holds
// sealed keys only, and a dump alone yields no signing key.
package pgstore
