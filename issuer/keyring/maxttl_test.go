package keyring_test

import (
	"testing"
	"time"

	"github.com/spiffe-sts/spiffe-sts/issuer/keyring"
	"github.com/spiffe-sts/spiffe-sts/issuer/keyring/internal/keyringtest"
)

// TestSetMaxTokenTTL checks that raising MaxTokenTTL keeps a retired key
// published longer, at once, and that it is never lowered.
func TestSetMaxTokenTTL(t *testing.T) {
	clk := keyringtest.NewClock()
	store := &memStore{}
	m := newManager(t, baseConfig(store, clk.Now)) // MaxTokenTTL 1h, Leeway 1m
	k1 := activeKID(m)
	clk.Advance(24 * time.Hour) // the next key is due
	refresh(t, m)
	recs := store.records()
	if len(recs) != 2 {
		t.Fatalf("%d records, want 2", len(recs))
	}
	a2 := recs[1].Activate
	end := a2.Add(time.Hour + time.Minute) // k1's end under the old TTL

	for _, tc := range []struct {
		name      string
		set       time.Duration
		expectTTL time.Duration
	}{
		{name: "lower is ignored", set: 30 * time.Minute, expectTTL: time.Hour},
		{name: "equal", set: time.Hour, expectTTL: time.Hour},
		{name: "raised", set: 2 * time.Hour, expectTTL: 2 * time.Hour},
		{name: "lower after raising is ignored", set: time.Hour, expectTTL: 2 * time.Hour},
	} {
		m.SetMaxTokenTTL(tc.set)
		if got := m.MaxTokenTTL(); got != tc.expectTTL {
			t.Errorf("%s: MaxTokenTTL = %s, want %s", tc.name, got, tc.expectTTL)
		}
	}
	clk.Set(end)
	if got := published(m); got[k1] != keyring.StateRetired {
		t.Fatalf("Published at the old end = %v, want %s still retired", got, k1)
	}
	refresh(t, m)
	if n := len(store.records()); n != 2 {
		t.Fatalf("%d records after a refresh at the old end, want 2 (nothing deleted)", n)
	}
	clk.Set(a2.Add(2*time.Hour + time.Minute))
	if _, ok := published(m)[k1]; ok {
		t.Fatal("retired key still published after the raised TTL")
	}
}
