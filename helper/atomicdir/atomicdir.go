package atomicdir

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"
)

const (
	// CurrentLink is the name of the symbolic link to the current version.
	CurrentLink = "current"
	// versionPrefix starts the name of every version directory; names that
	// start with a dot are refused for files, so none can collide.
	versionPrefix = "..v"
	// tmpLink is the link made before it is renamed over CurrentLink.
	tmpLink = "..current.tmp"

	// DefaultFileMode and DefaultDirMode are the modes used when Options
	// leaves them zero: owner-only.
	DefaultFileMode fs.FileMode = 0o600
	DefaultDirMode  fs.FileMode = 0o700
)

// Options configures a Writer.
type Options struct {
	// FileMode is the mode of every file written; DefaultFileMode when
	// zero.
	FileMode fs.FileMode
	// DirMode is the mode of the output directory, when New creates it,
	// and of every version directory; DefaultDirMode when zero.
	DirMode fs.FileMode
	// Now names version directories; time.Now when nil.
	Now func() time.Time
}

// Writer writes versions of a set of files into one output directory. It
// is safe for concurrent use; writes are serialized.
type Writer struct {
	dir      string
	fileMode fs.FileMode
	dirMode  fs.FileMode
	now      func() time.Time
	// noSync skips fsync; only the tests of this package set it.
	noSync bool

	mu sync.Mutex
}

// New returns a Writer for dir, creating it with the directory mode if it
// does not exist. It removes versions and a temporary link left by an
// earlier Writer, except the current version.
func New(dir string, opts Options) (*Writer, error) {
	w := &Writer{dir: dir, fileMode: opts.FileMode, dirMode: opts.DirMode, now: opts.Now}
	if w.fileMode == 0 {
		w.fileMode = DefaultFileMode
	}
	if w.dirMode == 0 {
		w.dirMode = DefaultDirMode
	}
	if w.fileMode&^fs.ModePerm != 0 || w.dirMode&^fs.ModePerm != 0 {
		return nil, errors.New("atomicdir: file and directory modes may hold permission bits only")
	}
	if w.now == nil {
		w.now = time.Now
	}
	if err := os.MkdirAll(dir, w.dirMode); err != nil {
		return nil, fmt.Errorf("atomicdir: output directory: %w", err)
	}
	cur, err := w.current()
	if err != nil {
		return nil, err
	}
	if err := w.removeOld(cur, ""); err != nil {
		return nil, err
	}
	return w, nil
}

// Dir returns the output directory.
func (w *Writer) Dir() string { return w.dir }

// current returns the name of the version the link points to; empty when
// there is no link. Anything else named CurrentLink is an error.
func (w *Writer) current() (string, error) {
	link := filepath.Join(w.dir, CurrentLink)
	fi, err := os.Lstat(link)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("atomicdir: %w", err)
	}
	if fi.Mode()&fs.ModeSymlink == 0 {
		return "", fmt.Errorf("atomicdir: %s exists and is not a symbolic link", link)
	}
	target, err := os.Readlink(link)
	if err != nil {
		return "", fmt.Errorf("atomicdir: %w", err)
	}
	return target, nil
}

// CheckName reports whether name can be a file of a set: a plain file
// name, not starting with a dot and not CurrentLink.
func CheckName(name string) error {
	switch {
	case name == "":
		return errors.New("atomicdir: empty file name")
	case strings.HasPrefix(name, "."):
		return fmt.Errorf("atomicdir: file name %q starts with a dot", name)
	case name == CurrentLink:
		return fmt.Errorf("atomicdir: file name %q is reserved for the link", name)
	case strings.ContainsAny(name, `/\`) || filepath.Base(name) != name:
		return fmt.Errorf("atomicdir: file name %q is not a plain file name", name)
	}
	return nil
}

// Write writes files (name to content) as a new version and makes it
// current: it creates a version directory, writes and fsyncs every file,
// fsyncs the directory, and renames a new link over CurrentLink. It then
// removes every version but the new one and the one it replaced. If Write
// fails before the rename, the current version is unchanged.
func (w *Writer) Write(files map[string][]byte) error {
	for name := range files {
		if err := CheckName(name); err != nil {
			return err
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	prev, err := w.current()
	if err != nil {
		return err
	}
	stamp := w.now().UTC().Format("20060102T150405.000000000Z")
	vdir, err := os.MkdirTemp(w.dir, versionPrefix+stamp+".")
	if err != nil {
		return fmt.Errorf("atomicdir: version directory: %w", err)
	}
	version := filepath.Base(vdir)
	if err := w.writeVersion(vdir, files); err != nil {
		_ = os.RemoveAll(vdir)
		return err
	}
	if err := w.swap(version); err != nil {
		_ = os.RemoveAll(vdir)
		return err
	}
	return w.removeOld(version, prev)
}

// writeVersion writes the files into vdir and syncs them and vdir.
func (w *Writer) writeVersion(vdir string, files map[string][]byte) error {
	// MkdirTemp made vdir 0700; the mode is set explicitly, beyond umask.
	if err := os.Chmod(vdir, w.dirMode); err != nil {
		return fmt.Errorf("atomicdir: %w", err)
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if err := w.writeFile(filepath.Join(vdir, name), files[name]); err != nil {
			return err
		}
	}
	return w.syncDir(vdir)
}

func (w *Writer) writeFile(path string, content []byte) (err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, w.fileMode)
	if err != nil {
		return fmt.Errorf("atomicdir: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("atomicdir: %w", cerr)
		}
	}()
	if err := f.Chmod(w.fileMode); err != nil {
		return fmt.Errorf("atomicdir: %w", err)
	}
	if _, err := f.Write(content); err != nil {
		return fmt.Errorf("atomicdir: %w", err)
	}
	if !w.noSync {
		if err := f.Sync(); err != nil {
			return fmt.Errorf("atomicdir: %w", err)
		}
	}
	return nil
}

// swap points CurrentLink at version with one rename(2) of a new link.
func (w *Writer) swap(version string) error {
	tmp := filepath.Join(w.dir, tmpLink)
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("atomicdir: %w", err)
	}
	// A relative target keeps the directory movable and is what os.Root
	// accepts.
	if err := os.Symlink(version, tmp); err != nil {
		return fmt.Errorf("atomicdir: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(w.dir, CurrentLink)); err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("atomicdir: %w", err)
	}
	return w.syncDir(w.dir)
}

func (w *Writer) syncDir(dir string) error {
	if w.noSync {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("atomicdir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("atomicdir: %w", err)
	}
	return nil
}

// removeOld removes every version directory but keep and prev, and a
// leftover temporary link.
func (w *Writer) removeOld(keep, prev string) error {
	entries, err := os.ReadDir(w.dir)
	if err != nil {
		return fmt.Errorf("atomicdir: %w", err)
	}
	var errs []error
	for _, e := range entries {
		name := e.Name()
		switch {
		case name == keep || name == prev:
		case name == tmpLink:
			errs = append(errs, os.Remove(filepath.Join(w.dir, name)))
		case strings.HasPrefix(name, versionPrefix) && e.IsDir():
			errs = append(errs, os.RemoveAll(filepath.Join(w.dir, name)))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("atomicdir: removing old versions: %w", err)
	}
	return nil
}

// ReadSet reads the named files of the current version of dir in one
// pass: it opens the version directory through CurrentLink once and reads
// every file from it. When the version is removed during the pass (two
// Writes in between), it starts again, a few times.
func ReadSet(dir string, names ...string) (map[string][]byte, error) {
	var err error
	for range 5 {
		var files map[string][]byte
		files, err = readOnce(dir, names)
		if err == nil {
			return files, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	return nil, err
}

func readOnce(dir string, names []string) (map[string][]byte, error) {
	root, err := os.OpenRoot(filepath.Join(dir, CurrentLink))
	if err != nil {
		return nil, fmt.Errorf("atomicdir: %w", err)
	}
	defer root.Close()
	files := make(map[string][]byte, len(names))
	for _, name := range names {
		b, err := root.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("atomicdir: %w", err)
		}
		files[name] = b
	}
	return files, nil
}
