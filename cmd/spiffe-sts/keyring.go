package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/spiffe-sts/spiffe-sts/issuer"
	"github.com/spiffe-sts/spiffe-sts/issuer/keyring"
	"github.com/spiffe-sts/spiffe-sts/issuer/keyring/filestore"
	"github.com/spiffe-sts/spiffe-sts/issuer/keyring/pgstore"
	"github.com/spiffe-sts/spiffe-sts/issuer/keyring/seal"
)

// storeStartTimeout bounds connecting to the key ring's database at
// start-up. A replica that cannot reach it has no key to sign with: run
// fails, and the orchestrator restarts it.
const storeStartTimeout = 30 * time.Second

// maxSecretFile caps the size of the key-encryption key and connection
// string files.
const maxSecretFile = 64 << 10

// ringStore opens the key ring's store of cfg's datastore block and returns
// the keyring.Config to use it with (without Legacy keys) and the function
// that closes the store. It reads the key-encryption key and connection
// string files, through symlinks (Kubernetes mounts Secrets so), and never
// logs or returns their contents.
func ringStore(ctx context.Context, cfg *config) (keyring.Config, func(), error) {
	ds := cfg.Datastore
	rotation, window := cfg.Issuer.schedule(cfg.Server.JWKSMaxAge)
	rc := keyring.Config{
		KeyID:     issuer.KeyID,
		Algorithm: cfg.Issuer.Algorithm.String(),
		Schedule: keyring.Schedule{
			RotationPeriod:    rotation,
			PublicationWindow: window,
			MaxTokenTTL:       cfg.maxTokenTTL(),
		},
		RefreshInterval: ds.RefreshInterval,
	}
	if ds.KEKFile != "" {
		b, err := readSecretFile(ds.KEKFile, ds.KEKFileAt)
		if err != nil {
			return rc, nil, err
		}
		if rc.KEK, err = seal.ParseKEK(b); err != nil {
			return rc, nil, ds.KEKFileAt.errorf("%s: %w", ds.KEKFile, err)
		}
	}
	if ds.Kind != datastorePostgres {
		store, err := filestore.Open(filepath.Join(cfg.Server.DataDir, filestore.FileName))
		if err != nil {
			return rc, nil, err
		}
		rc.Store = store
		return rc, func() {}, nil
	}
	dsn := ds.ConnectionString
	if ds.ConnectionStringFile != "" {
		b, err := readSecretFile(ds.ConnectionStringFile, ds.ConnectionStringFileAt)
		if err != nil {
			return rc, nil, err
		}
		if dsn = strings.TrimSpace(string(b)); dsn == "" {
			return rc, nil, ds.ConnectionStringFileAt.errorf("%s is empty", ds.ConnectionStringFile)
		}
	}
	openCtx, cancel := context.WithTimeout(ctx, storeStartTimeout)
	defer cancel()
	store, err := pgstore.Open(openCtx, dsn)
	if err != nil {
		return rc, nil, fmt.Errorf("datastore %q: %w", datastorePostgres, err)
	}
	rc.Store = store
	return rc, store.Close, nil
}

// readSecretFile reads a small file that holds a secret; errors name the
// file and the configuration attribute, never the contents.
func readSecretFile(path string, at attrAt) ([]byte, error) {
	f, err := os.Open(path) // follows symlinks: Secrets are mounted so
	if err != nil {
		return nil, at.errorf("%w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	if err != nil {
		return nil, at.errorf("%s: %w", path, err)
	}
	if len(b) > maxSecretFile {
		return nil, at.errorf("%s: larger than %d bytes", path, maxSecretFile)
	}
	return b, nil
}

// startKeyRing opens the store and loads the ring, importing the legacy
// key files of data_dir/keys into an empty ring (the files are left as
// they are). It fails when the store cannot be reached, when a record or
// a legacy file cannot be read (naming it) or when no key is active.
func startKeyRing(ctx context.Context, cfg *config) (*keyring.Manager, func(), error) {
	rc, closeStore, err := ringStore(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	if rc.Legacy, err = keyring.ReadLegacyKeys(filepath.Join(cfg.Server.DataDir, keyring.LegacyKeysDir)); err != nil {
		closeStore()
		return nil, nil, err
	}
	loadCtx, cancel := context.WithTimeout(ctx, storeStartTimeout)
	defer cancel()
	m, err := keyring.New(loadCtx, rc)
	if err != nil {
		closeStore()
		return nil, nil, whereRecord(cfg, err)
	}
	return m, closeStore, nil
}

// ringWatcher logs the key ring's events: keys added, activated, retired,
// revoked and removed (kid, seq and state, never key material), and the
// start and end of a store outage.
type ringWatcher struct {
	ring *keyring.Manager
	log  hclog.Logger
	// keys are the keys last logged, by kid.
	keys map[string]keyring.KeyInfo
	// changed is the ring's Changed channel, taken before keys were read.
	changed <-chan struct{}
	// reachable and lastErr are the store status last logged.
	reachable bool
	lastErr   string
}

func newRingWatcher(m *keyring.Manager, log hclog.Logger) *ringWatcher {
	w := &ringWatcher{ring: m, log: log, keys: map[string]keyring.KeyInfo{}, reachable: true}
	w.changed = m.Changed() // first: a change after it closes it
	for _, k := range m.Keys() {
		w.keys[k.KeyID] = k
		log.Info("signing key loaded", keyFields(k)...)
	}
	return w
}

func keyFields(k keyring.KeyInfo) []any {
	return []any{logKeyKID, k.KeyID, logKeySeq, k.Seq, logKeyAlgorithm, k.Algorithm, logKeyState, k.State.String(), logKeyActivates, k.Activate.UTC().Format(time.RFC3339)}
}

// run watches until ctx is done, checking the store's status every
// interval.
func (w *ringWatcher) run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-w.changed:
			w.changed = w.ring.Changed() // before reading the keys
			w.keysChanged()
		case <-t.C:
			w.status()
		}
	}
}

// keysChanged logs what changed in the ring since the last call.
func (w *ringWatcher) keysChanged() {
	now := map[string]keyring.KeyInfo{}
	for _, k := range w.ring.Keys() {
		now[k.KeyID] = k
		old, ok := w.keys[k.KeyID]
		switch {
		case !ok:
			w.log.Info("signing key created", keyFields(k)...)
		case old.State == k.State:
		case k.State == keyring.StateActive:
			w.log.Info("signing key activated", keyFields(k)...)
		case k.State == keyring.StateRevoked:
			w.log.Warn("signing key revoked", keyFields(k)...)
		default:
			w.log.Info("signing key "+k.State.String(), keyFields(k)...)
		}
	}
	for kid, k := range w.keys {
		if _, ok := now[kid]; !ok {
			w.log.Info("signing key removed", logKeyKID, kid, logKeySeq, k.Seq)
		}
	}
	w.keys = now
}

// status logs the start and end of a store outage, once each, and a
// refresh error that is not an outage (a record the ring refuses).
func (w *ringWatcher) status() {
	st := w.ring.Status()
	errText := ""
	if st.LastError != nil {
		errText = st.LastError.Error()
	}
	switch {
	case !st.StoreReachable && w.reachable:
		w.log.Warn("key ring store unavailable; signing with the in-memory key; rotation waits", logKeyError, errText)
	case st.StoreReachable && !w.reachable:
		w.log.Info("key ring store available again")
	case st.StoreReachable && errText != "" && errText != w.lastErr:
		var re *keyring.RecordError
		if errors.As(st.LastError, &re) {
			w.log.Error("key ring refresh refused a record; signing with the in-memory key", logKeyError, errText)
		}
	}
	w.reachable, w.lastErr = st.StoreReachable, errText
}

// whereRecord names where a ring record that does not open lives: the
// ring file of the embedded store, or the table of the PostgreSQL one (the
// record's seq and kid are in err). Other errors are returned as they are.
func whereRecord(cfg *config, err error) error {
	var recErr *keyring.RecordError
	if !errors.As(err, &recErr) {
		return err
	}
	if cfg.Datastore.Kind == datastorePostgres {
		return fmt.Errorf("datastore %q: table %s: %w", datastorePostgres, pgstore.KeysTable, err)
	}
	return fmt.Errorf("filestore: %s: %w", filepath.Join(cfg.Server.DataDir, filestore.FileName), err)
}
