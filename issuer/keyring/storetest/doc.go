// Package storetest is the conformance suite every keyring.Store must
// pass, like issuer/signertest for signers.
//
// Call Run from a store's tests with a function that makes an empty store
// and a way to open a second handle on the same data (another process or
// replica):
//
//	func TestStore(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) (keyring.Store, func(t *testing.T) keyring.Store) {
//			dir := t.TempDir()
//			open := func(t *testing.T) keyring.Store {
//				s, err := mystore.Open(dir)
//				if err != nil {
//					t.Fatal(err)
//				}
//				return s
//			}
//			return open(t), open
//		})
//	}
package storetest
