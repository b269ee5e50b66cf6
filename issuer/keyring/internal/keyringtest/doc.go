// Package keyringtest holds the test helpers shared by the tests of
// package keyring and its stores: the fake clock's start, a stand-in for
// the RFC 7638 key ID, a random key-encryption key, and the refresh
// benchmark every store runs (BenchRefresh).
//
//	clk := keyringtest.NewClock() // a *fakeclock.Clock at keyringtest.T0
//	m, err := keyring.New(ctx, keyring.Config{
//		Store: store, KEK: keyringtest.NewKEK(t), KeyID: keyringtest.KeyID,
//		Algorithm: keyring.ES256, Clock: clk.Now, ...
//	})
//
// It is for tests only.
package keyringtest
