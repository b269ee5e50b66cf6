// Package filestore is the embedded keyring.Store for a single node: the
// ring is one JSON file under the data directory (data_dir/keyring.json),
// mode 0600, with no server to run.
//
//	store, err := filestore.Open(filepath.Join(dataDir, filestore.FileName))
//	if err != nil {
//		return err
//	}
//	m, err := keyring.New(ctx, keyring.Config{Store: store, ...})
//
// Every change reads the file, edits it in memory and writes a temporary
// file that is synced and renamed over the old one, then syncs the
// directory, all under an exclusive flock(2) on a lock file beside it
// (keyring.json.lock), so that several processes on one node (a server
// and `spiffe-sts keys rotate`) are safe and a crash leaves the old or the
// new version, never a mix. Readers need no lock: a rename is atomic.
//
// Without a key-encryption key the file holds plain PKCS#8 keys, protected
// only by its mode, as issuer/diskkey's files were; with one (keyring.Config.KEK)
// it holds only sealed keys.
package filestore
