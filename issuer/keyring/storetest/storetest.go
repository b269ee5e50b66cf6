package storetest

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/spiffe-sts/spiffe-sts/issuer/keyring"
)

// NewStore makes an empty store and returns it with a function that opens
// another handle on the same data.
type NewStore func(t *testing.T) (keyring.Store, func(t *testing.T) keyring.Store)

// Run checks that stores made by newStore keep records verbatim
// (microsecond times, bytes, zero Revoked), refuse a taken Seq or kid with
// ErrConflict (also when several handles insert the same Seq at once:
// exactly one wins), keep the first revocation time, only move Activate
// earlier on Promote, report unknown kids with ErrNotFound, and show each
// handle's writes to the others.
func Run(t *testing.T, newStore NewStore) {
	t.Helper()
	ctx := context.Background()
	base := time.Date(2030, 1, 2, 3, 4, 5, 123456000, time.UTC)

	t.Run("Empty", func(t *testing.T) {
		s, _ := newStore(t)
		recs, err := s.List(ctx)
		if err != nil || len(recs) != 0 {
			t.Fatalf("List = %v, %v; want none", recs, err)
		}
	})

	t.Run("InsertList", func(t *testing.T) {
		s, reopen := newStore(t)
		want := []keyring.Record{record(1, base), record(2, base.Add(time.Hour))}
		want[1].Revoked = base.Add(2 * time.Hour)
		want[1].SealedKey = bytes.Repeat([]byte{0, 1, 0xff}, 700) // an RSA-sized blob with NULs
		for _, r := range want {
			if err := s.Insert(ctx, r); err != nil {
				t.Fatalf("Insert(seq %d): %v", r.Seq, err)
			}
		}
		check(t, s, want)
		check(t, reopen(t), want)
	})

	t.Run("Conflict", func(t *testing.T) {
		s, _ := newStore(t)
		first := record(1, base)
		if err := s.Insert(ctx, first); err != nil {
			t.Fatal(err)
		}
		sameSeq := record(1, base)
		sameSeq.KeyID = "other-kid"
		sameKid := record(2, base)
		sameKid.KeyID = first.KeyID
		for name, r := range map[string]keyring.Record{"seq": sameSeq, "kid": sameKid} {
			if err := s.Insert(ctx, r); !errors.Is(err, keyring.ErrConflict) {
				t.Errorf("Insert with a taken %s = %v, want ErrConflict", name, err)
			}
		}
		check(t, s, []keyring.Record{first})
	})

	t.Run("ConcurrentInsert", func(t *testing.T) {
		s, reopen := newStore(t)
		const n = 4
		handles := []keyring.Store{s}
		for len(handles) < n {
			handles = append(handles, reopen(t))
		}
		var wg sync.WaitGroup
		errs := make([]error, n)
		start := make(chan struct{})
		for i, h := range handles {
			wg.Go(func() {
				r := record(1, base)
				r.KeyID = fmt.Sprintf("kid-%d", i)
				<-start
				errs[i] = h.Insert(ctx, r)
			})
		}
		close(start)
		wg.Wait()
		won := 0
		for i, err := range errs {
			switch {
			case err == nil:
				won++
			case !errors.Is(err, keyring.ErrConflict):
				t.Errorf("handle %d: Insert = %v, want nil or ErrConflict", i, err)
			}
		}
		if won != 1 {
			t.Fatalf("%d inserts of seq 1 won, want exactly 1", won)
		}
		recs, err := s.List(ctx)
		if err != nil || len(recs) != 1 {
			t.Fatalf("List = %v, %v; want one record", recs, err)
		}
	})

	t.Run("Revoke", func(t *testing.T) {
		s, reopen := newStore(t)
		r := record(1, base)
		if err := s.Insert(ctx, r); err != nil {
			t.Fatal(err)
		}
		at := base.Add(time.Minute)
		if err := s.Revoke(ctx, r.KeyID, at); err != nil {
			t.Fatalf("Revoke: %v", err)
		}
		if err := s.Revoke(ctx, r.KeyID, at.Add(time.Hour)); err != nil {
			t.Fatalf("Revoke again: %v", err)
		}
		r.Revoked = at
		check(t, reopen(t), []keyring.Record{r})
		if err := s.Revoke(ctx, "no-such-kid", at); !errors.Is(err, keyring.ErrNotFound) {
			t.Errorf("Revoke(unknown) = %v, want ErrNotFound", err)
		}
	})

	t.Run("Promote", func(t *testing.T) {
		s, reopen := newStore(t)
		r := record(1, base.Add(time.Hour))
		if err := s.Insert(ctx, r); err != nil {
			t.Fatal(err)
		}
		if err := s.Promote(ctx, r.KeyID, base.Add(2*time.Hour)); err != nil {
			t.Fatalf("Promote(later): %v", err)
		}
		check(t, s, []keyring.Record{r})
		if err := s.Promote(ctx, r.KeyID, base); err != nil {
			t.Fatalf("Promote(earlier): %v", err)
		}
		r.Activate = base
		check(t, reopen(t), []keyring.Record{r})
		if err := s.Promote(ctx, "no-such-kid", base); !errors.Is(err, keyring.ErrNotFound) {
			t.Errorf("Promote(unknown) = %v, want ErrNotFound", err)
		}
	})

	t.Run("Delete", func(t *testing.T) {
		s, reopen := newStore(t)
		a, b := record(1, base), record(2, base)
		for _, r := range []keyring.Record{a, b} {
			if err := s.Insert(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Delete(ctx, a.KeyID); err != nil {
			t.Fatalf("Delete: %v", err)
		}
		check(t, reopen(t), []keyring.Record{b})
		if err := s.Delete(ctx, a.KeyID); !errors.Is(err, keyring.ErrNotFound) {
			t.Errorf("Delete(deleted) = %v, want ErrNotFound", err)
		}
		// A deleted Seq below the maximum is never proposed again by the
		// ring, but the store itself allows it.
		if err := s.Insert(ctx, a); err != nil {
			t.Errorf("Insert after Delete: %v", err)
		}
	})
}

// record returns a record with distinct fields for seq.
func record(seq int64, activate time.Time) keyring.Record {
	return keyring.Record{
		Seq:       seq,
		KeyID:     fmt.Sprintf("kid-%d", seq),
		Algorithm: keyring.ES256,
		Created:   activate.Add(-10 * time.Minute),
		Activate:  activate,
		SealedKey: []byte(fmt.Sprintf("sealed-%d", seq)),
	}
}

// check fails t unless s lists exactly want (in any order).
func check(t *testing.T, s keyring.Store, want []keyring.Record) {
	t.Helper()
	got, err := s.List(context.Background())
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	slices.SortFunc(got, func(a, b keyring.Record) int { return cmp.Compare(a.Seq, b.Seq) })
	if len(got) != len(want) {
		t.Fatalf("List returned %d records, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.Seq != w.Seq || g.KeyID != w.KeyID || g.Algorithm != w.Algorithm ||
			!g.Created.Equal(w.Created) || !g.Activate.Equal(w.Activate) ||
			!g.Revoked.Equal(w.Revoked) || g.Revoked.IsZero() != w.Revoked.IsZero() ||
			!bytes.Equal(g.SealedKey, w.SealedKey) {
			t.Errorf("record %d = %+v\nwant %+v", i, summary(g), summary(w))
		}
	}
}

func summary(r keyring.Record) string {
	return fmt.Sprintf("{Seq:%d KeyID:%s Algorithm:%s Created:%s Activate:%s Revoked:%s SealedKey:%d bytes}",
		r.Seq, r.KeyID, r.Algorithm, r.Created.Format(time.RFC3339Nano), r.Activate.Format(time.RFC3339Nano), r.Revoked.Format(time.RFC3339Nano), len(r.SealedKey))
}
