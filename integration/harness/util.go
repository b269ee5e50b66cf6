package harness

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
)

// modulePath is the import path of the repository's root module.
const modulePath = "github.com/spiffe-sts/spiffe-sts"

// FreePort returns a TCP port on 127.0.0.1 that was free at the time of the
// call (the kernel picks it; the listener is closed before returning).
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("harness: free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// CopyExecutable copies the file at src to dir/name with mode 0755 and
// returns the absolute path of the copy. With SPIRE's unix:path selectors,
// each copy of a binary at its own path can be given its own SPIFFE ID.
func CopyExecutable(src, dir, name string) (string, error) {
	dst, err := filepath.Abs(filepath.Join(dir, name))
	if err != nil {
		return "", fmt.Errorf("harness: copy executable: %w", err)
	}
	in, err := os.Open(src)
	if err != nil {
		return "", fmt.Errorf("harness: copy executable: %w", err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o755)
	if err != nil {
		return "", fmt.Errorf("harness: copy executable: %w", err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return "", fmt.Errorf("harness: copy executable: %w", err)
	}
	if err := out.Close(); err != nil {
		return "", fmt.Errorf("harness: copy executable: %w", err)
	}
	// OpenFile's mode is subject to the umask and unused for existing files.
	if err := os.Chmod(dst, 0o755); err != nil {
		return "", fmt.Errorf("harness: copy executable: %w", err)
	}
	return dst, nil
}

// BuildBinary runs `go build -o dir/name pkg` in the repository root (the
// directory of the github.com/spiffe-sts/spiffe-sts module) and returns the
// absolute path of the binary. pkg is an import path or a path relative to
// the repository root such as "./cmd/spiffe-sts". tags, when given, are
// passed as -tags (integration/loadtest builds spiffe-sts with its
// profiling hook this way).
func BuildBinary(ctx context.Context, pkg, dir, name string, tags ...string) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	out, err := filepath.Abs(filepath.Join(dir, name))
	if err != nil {
		return "", fmt.Errorf("harness: build %s: %w", pkg, err)
	}
	args := []string{"build", "-o", out}
	if len(tags) > 0 {
		args = append(args, "-tags", strings.Join(tags, ","))
	}
	cmd := exec.CommandContext(ctx, goTool(), append(args, pkg)...)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("harness: go build %s: %w\n%s", pkg, err, b)
	}
	return out, nil
}

// RepoRoot returns the root directory of the github.com/spiffe-sts/spiffe-sts
// repository: found from this source file's location when the sources are
// available, else by walking up from the working directory to the go.mod
// declaring that module.
func RepoRoot() (string, error) {
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		// file is <root>/integration/harness/util.go.
		root := filepath.Dir(filepath.Dir(filepath.Dir(file)))
		if isRootModule(root) {
			return root, nil
		}
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("harness: repo root: %w", err)
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		if isRootModule(dir) {
			return dir, nil
		}
		if filepath.Dir(dir) == dir {
			break
		}
	}
	return "", fmt.Errorf("harness: cannot find the %s module root from %s", modulePath, wd)
}

// isRootModule reports whether dir/go.mod declares the root module.
func isRootModule(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		return false
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`) == modulePath
		}
	}
	return false
}

// goTool returns the go command to use. `go test` puts its own GOROOT/bin
// first in PATH, so "go" is the toolchain that runs the tests.
func goTool() string { return "go" }

// tailLines returns the last n lines of the file at path.
func tailLines(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "<no log>\n"
		}
		return fmt.Sprintf("<cannot read %s: %v>\n", path, err)
	}
	s := strings.TrimRight(string(b), "\n")
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("... (%d earlier lines)", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n") + "\n"
}
