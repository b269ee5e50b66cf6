package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// SPIREVersion is the SPIRE release the harness builds and runs. It must
// match the version required by the integration/spire module.
const SPIREVersion = "v1.13.3"

// spireBinaryNames are the executables SPIREBinaries provides.
var spireBinaryNames = []string{"spire-server", "spire-agent"}

// SPIREBinaries returns the directory holding the spire-server and
// spire-agent executables for [SPIREVersion].
//
// The directory is spire-<version>/bin under $SPIFFE_STS_CACHE when that is
// set, else under $XDG_CACHE_HOME/spiffe-sts, else under ~/.cache/spiffe-sts.
// When the binaries are absent it builds them with
//
//	go build -o <tmpdir>/ github.com/spiffe/spire/cmd/spire-server github.com/spiffe/spire/cmd/spire-agent
//
// inside the repository's integration/spire module (cgo enabled: SPIRE's
// sqlite datastore needs it) and renames them into place. An exclusive lock
// on spire-<version>.lock next to that directory keeps concurrent callers
// (for example parallel `go test` package binaries) from building at once.
// A build from an empty Go cache takes several minutes; it is bounded only by
// ctx. Progress is reported through logf, which may be nil.
//
// It never skips: a failure to build is returned as an error.
func SPIREBinaries(ctx context.Context, logf func(string, ...any)) (string, error) {
	if logf == nil {
		logf = func(string, ...any) {}
	}
	base, err := spireCacheBase()
	if err != nil {
		return "", err
	}
	binDir := filepath.Join(base, "spire-"+SPIREVersion, "bin")
	if haveBinaries(binDir) {
		return binDir, nil
	}
	if err := os.MkdirAll(filepath.Dir(binDir), 0o755); err != nil {
		return "", fmt.Errorf("harness: SPIRE cache dir: %w", err)
	}
	unlock, err := lockFile(ctx, filepath.Join(base, "spire-"+SPIREVersion+".lock"), logf)
	if err != nil {
		return "", err
	}
	defer unlock()
	if haveBinaries(binDir) { // built by another process while we waited
		return binDir, nil
	}
	if err := buildSPIRE(ctx, binDir, logf); err != nil {
		return "", err
	}
	return binDir, nil
}

// spireCacheBase returns the spiffe-sts cache directory.
func spireCacheBase() (string, error) {
	if d := os.Getenv("SPIFFE_STS_CACHE"); d != "" {
		return filepath.Abs(d)
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "spiffe-sts"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("harness: no cache dir (set SPIFFE_STS_CACHE): %w", err)
	}
	return filepath.Join(home, ".cache", "spiffe-sts"), nil
}

// haveBinaries reports whether dir holds every SPIRE executable.
func haveBinaries(dir string) bool {
	for _, n := range spireBinaryNames {
		fi, err := os.Stat(filepath.Join(dir, n))
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			return false
		}
	}
	return true
}

// lockFile takes an exclusive flock on path, polling so that ctx is honoured,
// and returns the function that releases it.
func lockFile(ctx context.Context, path string, logf func(string, ...any)) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("harness: lock: %w", err)
	}
	logged := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
				f.Close()
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return nil, fmt.Errorf("harness: lock %s: %w", path, err)
		}
		if !logged {
			logf("harness: waiting for another process building SPIRE %s (lock %s)", SPIREVersion, path)
			logged = true
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("harness: waiting for lock %s: %w", path, ctx.Err())
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// spireModuleDir returns the integration/spire module directory.
func spireModuleDir() (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(root, "integration", "spire")
	if _, err := os.Stat(filepath.Join(dir, "go.mod")); err != nil {
		return "", fmt.Errorf("harness: SPIRE build module: %w", err)
	}
	return dir, nil
}

// buildSPIRE builds the SPIRE binaries into a temporary directory next to
// binDir and renames them into place.
func buildSPIRE(ctx context.Context, binDir string, logf func(string, ...any)) error {
	modDir, err := spireModuleDir()
	if err != nil {
		return err
	}
	parent := filepath.Dir(binDir)
	tmp, err := os.MkdirTemp(parent, "build-")
	if err != nil {
		return fmt.Errorf("harness: SPIRE build dir: %w", err)
	}
	defer os.RemoveAll(tmp)

	args := []string{"build", "-o", tmp + string(filepath.Separator)}
	for _, n := range spireBinaryNames {
		args = append(args, "github.com/spiffe/spire/cmd/"+n)
	}
	logf("harness: building SPIRE %s into %s (in %s; several minutes from a cold Go cache)", SPIREVersion, binDir, modDir)
	start := time.Now()
	cmd := exec.CommandContext(ctx, goTool(), args...)
	cmd.Dir = modDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1", "GOWORK=off")
	out, err := runWithProgress(cmd, logf, start)
	if err != nil {
		return fmt.Errorf("harness: building SPIRE %s failed after %s: %w\n%s", SPIREVersion, time.Since(start).Round(time.Second), err, out)
	}
	if !haveBinaries(tmp) {
		return fmt.Errorf("harness: building SPIRE %s produced no binaries in %s\n%s", SPIREVersion, tmp, out)
	}
	// Rename each binary, then the bin dir, so binDir only ever appears complete.
	staged := filepath.Join(tmp, "bin")
	if err := os.Mkdir(staged, 0o755); err != nil {
		return fmt.Errorf("harness: SPIRE build: %w", err)
	}
	for _, n := range spireBinaryNames {
		if err := os.Rename(filepath.Join(tmp, n), filepath.Join(staged, n)); err != nil {
			return fmt.Errorf("harness: SPIRE build: %w", err)
		}
	}
	// A stale, incomplete bin dir (e.g. from an interrupted manual build) is replaced.
	if err := os.RemoveAll(binDir); err != nil {
		return fmt.Errorf("harness: SPIRE build: %w", err)
	}
	if err := os.Rename(staged, binDir); err != nil {
		return fmt.Errorf("harness: SPIRE build: %w", err)
	}
	logf("harness: built SPIRE %s in %s", SPIREVersion, time.Since(start).Round(time.Second))
	return nil
}

// runWithProgress runs cmd, collecting its combined output and logging a
// "still building" line every 30 seconds.
func runWithProgress(cmd *exec.Cmd, logf func(string, ...any), start time.Time) ([]byte, error) {
	done := make(chan struct{})
	defer close(done)
	go func() {
		t := time.NewTicker(30 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				logf("harness: still building SPIRE (%s)", time.Since(start).Round(time.Second))
			}
		}
	}()
	return cmd.CombinedOutput()
}
