package filestore

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/spiffe-sts/spiffe-sts/issuer/keyring"
)

const (
	// FileName is the ring file's name under the data directory.
	FileName = "keyring.json"
	// formatVersion is the "version" of the file format written.
	formatVersion = 1
	// maxFile bounds how much of the file is read.
	maxFile = 16 << 20
)

// Store is a keyring.Store in one JSON file. It is safe for concurrent use
// by goroutines and processes.
type Store struct {
	path string
	lock string
}

var _ keyring.Store = (*Store)(nil)

// Open returns the store kept in the file at path, creating its directory
// (mode 0700) if needed. The file itself is created by the first Insert.
func Open(path string) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("filestore: create directory: %w", err)
	}
	s := &Store{path: path, lock: path + ".lock"}
	if _, err := s.read(); err != nil {
		return nil, err
	}
	return s, nil
}

// file is the JSON document.
type file struct {
	Version int   `json:"version"`
	Keys    []key `json:"keys"`
}

type key struct {
	Seq       int64     `json:"seq"`
	KeyID     string    `json:"kid"`
	Algorithm string    `json:"alg"`
	Created   time.Time `json:"created"`
	Activate  time.Time `json:"activate"`
	Revoked   time.Time `json:"revoked,omitzero"`
	// SealedKey is base64 in JSON.
	SealedKey []byte `json:"key"`
}

// List returns every record in the file.
func (s *Store) List(ctx context.Context) ([]keyring.Record, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f, err := s.read()
	if err != nil {
		return nil, err
	}
	recs := make([]keyring.Record, len(f.Keys))
	for i, k := range f.Keys {
		recs[i] = keyring.Record(k)
	}
	return recs, nil
}

// Insert adds r unless its Seq or KeyID is taken (keyring.ErrConflict).
func (s *Store) Insert(ctx context.Context, r keyring.Record) error {
	return s.update(ctx, func(f *file) error {
		for _, k := range f.Keys {
			if k.Seq == r.Seq || k.KeyID == r.KeyID {
				return fmt.Errorf("filestore: insert seq %d: %w", r.Seq, keyring.ErrConflict)
			}
		}
		f.Keys = append(f.Keys, key(r))
		slices.SortFunc(f.Keys, func(a, b key) int { return cmp.Compare(a.Seq, b.Seq) })
		return nil
	})
}

// Revoke sets Revoked for kid unless it is set already.
func (s *Store) Revoke(ctx context.Context, kid string, at time.Time) error {
	return s.edit(ctx, kid, func(k *key) bool {
		if !k.Revoked.IsZero() {
			return false
		}
		k.Revoked = at
		return true
	})
}

// Promote moves kid's Activate back to at if at is earlier.
func (s *Store) Promote(ctx context.Context, kid string, at time.Time) error {
	return s.edit(ctx, kid, func(k *key) bool {
		if !at.Before(k.Activate) {
			return false
		}
		k.Activate = at
		return true
	})
}

// Delete removes kid.
func (s *Store) Delete(ctx context.Context, kid string) error {
	return s.update(ctx, func(f *file) error {
		i := slices.IndexFunc(f.Keys, func(k key) bool { return k.KeyID == kid })
		if i < 0 {
			return fmt.Errorf("filestore: delete %q: %w", kid, keyring.ErrNotFound)
		}
		f.Keys = slices.Delete(f.Keys, i, i+1)
		return nil
	})
}

// errUnchanged tells update that nothing needs writing.
var errUnchanged = errors.New("unchanged")

// edit applies change to the key with kid; change reports whether it
// changed anything.
func (s *Store) edit(ctx context.Context, kid string, change func(*key) bool) error {
	return s.update(ctx, func(f *file) error {
		i := slices.IndexFunc(f.Keys, func(k key) bool { return k.KeyID == kid })
		if i < 0 {
			return fmt.Errorf("filestore: %q: %w", kid, keyring.ErrNotFound)
		}
		if !change(&f.Keys[i]) {
			return errUnchanged
		}
		return nil
	})
}

// update runs change on the current file under the lock and writes the
// result atomically.
func (s *Store) update(ctx context.Context, change func(*file) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	unlock, err := s.lockFile()
	if err != nil {
		return err
	}
	defer unlock()
	f, err := s.read()
	if err != nil {
		return err
	}
	if err := change(f); err != nil {
		if errors.Is(err, errUnchanged) {
			return nil
		}
		return err
	}
	return s.write(f)
}

// lockFile takes an exclusive flock on the lock file. Each call opens its
// own file description, so handles in one process exclude each other too.
func (s *Store) lockFile() (func(), error) {
	lf, err := os.OpenFile(s.lock, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("filestore: open lock: %w", err)
	}
	for {
		err = syscall.Flock(int(lf.Fd()), syscall.LOCK_EX)
		if !errors.Is(err, syscall.EINTR) {
			break
		}
	}
	if err != nil {
		lf.Close()
		return nil, fmt.Errorf("filestore: lock %s: %w", s.lock, err)
	}
	return func() { lf.Close() }, nil // closing releases the lock
}

// read loads the file; a missing file is an empty ring.
func (s *Store) read() (*file, error) {
	fh, err := os.Open(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		return &file{Version: formatVersion}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("filestore: %w", err)
	}
	defer fh.Close()
	fi, err := fh.Stat()
	if err != nil {
		return nil, fmt.Errorf("filestore: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("filestore: %s: not a regular file", s.path)
	}
	if err := checkOwner(s.path, fi); err != nil {
		return nil, err
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("filestore: %s: mode %#o gives group or others access; want 0600", s.path, perm)
	}
	data, err := io.ReadAll(io.LimitReader(fh, maxFile+1))
	if err != nil {
		return nil, fmt.Errorf("filestore: %s: %w", s.path, err)
	}
	if len(data) > maxFile {
		return nil, fmt.Errorf("filestore: %s: larger than %d bytes", s.path, maxFile)
	}
	var f file
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("filestore: %s: not a key ring file: %w", s.path, err)
	}
	if f.Version != formatVersion {
		return nil, fmt.Errorf("filestore: %s: format version %d, want %d", s.path, f.Version, formatVersion)
	}
	return &f, nil
}

// write replaces the file with f: temporary file, fsync, rename, fsync of
// the directory.
func (s *Store) write(f *file) error {
	f.Version = formatVersion
	if f.Keys == nil {
		f.Keys = []key{}
	}
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("filestore: encode: %w", err)
	}
	dir := filepath.Dir(s.path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(s.path)+".*.tmp")
	if err != nil {
		return fmt.Errorf("filestore: create temporary file: %w", err)
	}
	tmpName := tmp.Name()
	defer os.Remove(tmpName) // no-op after the rename
	err = tmp.Chmod(0o600)
	if err == nil {
		_, err = tmp.Write(append(data, '\n'))
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("filestore: write %s: %w", tmpName, err)
	}
	if err := os.Rename(tmpName, s.path); err != nil {
		return fmt.Errorf("filestore: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("filestore: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("filestore: sync %s: %w", dir, err)
	}
	return nil
}
