package issuer_test

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/internal/fakeclock"
	"github.com/spiffe-sts/spiffe-sts/issuer"
	"github.com/spiffe-sts/spiffe-sts/issuer/keyring"
	"github.com/spiffe-sts/spiffe-sts/issuer/keyring/filestore"
)

// newRing returns a key ring in a file of a temporary directory.
func newRing(t *testing.T, clk *fakeclock.Clock) *keyring.Manager {
	t.Helper()
	store, err := filestore.Open(filepath.Join(t.TempDir(), filestore.FileName))
	if err != nil {
		t.Fatal(err)
	}
	m, err := keyring.New(context.Background(), keyring.Config{
		Store:     store,
		KeyID:     issuer.KeyID,
		Algorithm: keyring.ES256,
		Schedule:  keyring.Schedule{RotationPeriod: 24 * time.Hour, PublicationWindow: 10 * time.Minute, MaxTokenTTL: 5 * time.Minute},
		Clock:     clk.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// mintKID mints a token and returns the kid of its header, checking that
// the issuer's own key set verifies it.
func mintKID(t *testing.T, iss *issuer.Issuer, clk *fakeclock.Clock) string {
	t.Helper()
	leaf := newLeaf(t, clk.Now().Add(time.Hour))
	claims := baseClaims()
	raw, err := iss.Mint(context.Background(), &claims, leaf, 0)
	if err != nil {
		t.Fatalf("Mint: %v", err)
	}
	var hdr map[string]string
	decodeSegment(t, raw, 0, &hdr)
	v := accesstoken.NewVerifier(testIssuerURL, iss.KeySet(), &accesstoken.Config{Audiences: []string{testAudience}, Now: clk.Now})
	if _, err := v.Verify(context.Background(), raw, leaf); err != nil {
		t.Fatalf("the issuer's key set does not verify its token: %v", err)
	}
	return hdr["kid"]
}

// kids returns the kids of the issuer's JWKS document.
func kids(t *testing.T, iss *issuer.Issuer) map[string]bool {
	t.Helper()
	doc, err := iss.KeySet().MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	var jwks struct {
		Keys []struct {
			KID string `json:"kid"`
			Alg string `json:"alg"`
			Use string `json:"use"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(doc, &jwks); err != nil {
		t.Fatal(err)
	}
	out := map[string]bool{}
	for _, k := range jwks.Keys {
		if k.Alg != "ES256" || k.Use != "sig" {
			t.Errorf("JWK %s: alg %q use %q, want ES256 sig", k.KID, k.Alg, k.Use)
		}
		out[k.KID] = true
	}
	return out
}

// TestRingKeys checks that Mint follows the ring's active key and that the
// JWKS follows the ring's Version.
func TestRingKeys(t *testing.T) {
	ctx := context.Background()
	clk := fakeclock.New(testNow)
	m := newRing(t, clk)
	keys, err := issuer.NewRingKeys(m)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := issuer.New(issuer.Config{IssuerURL: testIssuerURL, Keys: keys, Clock: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if err := iss.Ready(); err != nil {
		t.Fatalf("Ready: %v", err)
	}
	_, k1, _ := m.Active()
	if got := mintKID(t, iss, clk); got != k1 {
		t.Fatalf("token kid %s, want the active key %s", got, k1)
	}
	if got := kids(t, iss); len(got) != 1 || !got[k1] {
		t.Fatalf("JWKS kids %v, want only %s", got, k1)
	}

	// Same version: the same set, not rebuilt.
	if a, b := keys.PublicKeys(), keys.PublicKeys(); a != b {
		t.Error("PublicKeys rebuilt without a change of Version")
	}
	before := keys.PublicKeys()

	// A rotation publishes the next key at once; the active one signs.
	next, err := m.Rotate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if keys.PublicKeys() == before {
		t.Error("PublicKeys not rebuilt after a change of Version")
	}
	if got := kids(t, iss); len(got) != 2 || !got[k1] || !got[next.KeyID] {
		t.Fatalf("JWKS kids %v, want %s and %s", got, k1, next.KeyID)
	}
	if got := mintKID(t, iss, clk); got != k1 {
		t.Fatalf("token kid %s before activation, want %s", got, k1)
	}

	// At its activation time the next key signs, without a refresh.
	clk.Set(next.Activate)
	if got := mintKID(t, iss, clk); got != next.KeyID {
		t.Fatalf("token kid %s at activation, want %s", got, next.KeyID)
	}

	// A revoked key leaves the JWKS and the verification keys.
	if err := m.Revoke(ctx, k1); err != nil {
		t.Fatal(err)
	}
	if got := kids(t, iss); len(got) != 1 || !got[next.KeyID] {
		t.Fatalf("JWKS kids %v after revoking %s, want only %s", got, k1, next.KeyID)
	}
	if _, err := iss.KeySet().LookupKey(ctx, k1); err == nil {
		t.Errorf("revoked key %s still verifies", k1)
	}
}

// BenchmarkMintRing measures Mint signing with a key ring's active key.
func BenchmarkMintRing(b *testing.B) {
	clk := fakeclock.New(testNow)
	store, err := filestore.Open(filepath.Join(b.TempDir(), filestore.FileName))
	if err != nil {
		b.Fatal(err)
	}
	m, err := keyring.New(context.Background(), keyring.Config{
		Store: store, KeyID: issuer.KeyID, Algorithm: keyring.ES256, Clock: clk.Now,
		Schedule: keyring.Schedule{MaxTokenTTL: 5 * time.Minute},
	})
	if err != nil {
		b.Fatal(err)
	}
	keys, err := issuer.NewRingKeys(m)
	if err != nil {
		b.Fatal(err)
	}
	iss, err := issuer.New(issuer.Config{IssuerURL: testIssuerURL, Keys: keys, Clock: clk.Now})
	if err != nil {
		b.Fatal(err)
	}
	benchMint(b, iss)
}
