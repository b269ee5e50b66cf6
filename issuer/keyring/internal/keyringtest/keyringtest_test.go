package keyringtest_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"testing"

	"github.com/spiffe-sts/spiffe-sts/issuer/keyring/internal/keyringtest"
)

func TestKeyID(t *testing.T) {
	a, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ka, err := keyringtest.KeyID(a.Public())
	if err != nil {
		t.Fatal(err)
	}
	again, _ := keyringtest.KeyID(a.Public())
	kb, _ := keyringtest.KeyID(b.Public())
	if ka != again || ka == kb || len(ka) != 43 {
		t.Errorf("KeyID = %q, %q again, %q for another key; want a stable 43-character ID per key", ka, again, kb)
	}
	if _, err := keyringtest.KeyID(struct{}{}); err == nil {
		t.Error("KeyID accepted a value that is not a public key")
	}
}

func TestNewKEK(t *testing.T) {
	if keyringtest.NewKEK(t) == nil {
		t.Fatal("NewKEK returned nil")
	}
	if !keyringtest.NewClock().Now().Equal(keyringtest.T0) {
		t.Error("NewClock does not start at T0")
	}
}
