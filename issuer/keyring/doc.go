// Package keyring keeps the issuer's signing keys as a ring that rotates
// on a schedule, with pre-publication, shared by any number of stateless
// replicas through a Store.
//
// Each key is a Record with its times: it is published as "next" from its
// creation, signs ("active") from its Activate time, stays published as
// "retired" until every token it signed has expired, and is then removed.
// A withdrawn key ("revoked") leaves the published set at once. States are
// computed from the recorded times and the clock (Schedule.States), never
// kept in memory, so replicas switch keys together without talking to
// each other, and a clock skew of seconds is harmless against a
// publication window of minutes.
//
// This follows SPIRE's prepared and active slots
// (spiffe/spire pkg/server/ca/manager/slot.go), generalized to a list,
// and settles races among replicas like Dex's compare-and-swap rotation
// (dexidp/dex server/rotation.go): each replica proposes Seq = max+1, the
// Store accepts one and answers ErrConflict to the others, which reload
// and adopt the winner. Unlike Dex, a new key is published for
// PublicationWindow (default twice the JWKS max-age) before any replica
// signs with it, so verifiers that refresh the JWKS only on expiry never
// meet an unknown kid.
//
// Private keys are PKCS#8, sealed at rest with AES-256-GCM under a
// key-encryption key (package seal) and bound to their record's seq, kid
// and algorithm. A record that does not open is refused with a
// *RecordError naming it, and never overwritten, deleted or skipped.
//
// A Manager loads the ring (New), refreshes it in the background (Run) and
// serves signing from memory:
//
//	m, err := keyring.New(ctx, keyring.Config{
//		Store:     store, // filestore or pgstore
//		KEK:       kek,   // seal.ParseKEK of the key-encryption key file
//		KeyID:     thumbprint, // RFC 7638, from the JOSE library
//		Algorithm: keyring.ES256,
//		Schedule:  keyring.Schedule{RotationPeriod: 24 * time.Hour, MaxTokenTTL: time.Hour},
//		Legacy:    legacy, // keyring.ReadLegacyKeys(filepath.Join(dataDir, keyring.LegacyKeysDir))
//	})
//	if err != nil {
//		return err // not ready
//	}
//	go m.Run(ctx)
//	signer, kid, alg := m.Active() // hot path: memory only
//	jwks := m.Published()          // rebuild when m.Changed() fires
//
// List, Rotate and Revoke serve `spiffe-sts keys list|rotate|revoke`
// without a Manager.
package keyring
