package pgtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const (
	// SkipEnv set to "1" skips tests needing PostgreSQL when it is absent.
	SkipEnv = "SPIFFE_STS_SKIP_PG"
	// User is the unprivileged user the cluster runs as under root.
	User = "spiffests"
	// cmdTimeout bounds every initdb, pg_ctl and psql run.
	cmdTimeout = 60 * time.Second
)

// Cluster is a running throwaway PostgreSQL cluster.
type Cluster struct {
	bin    string // directory of initdb, pg_ctl, psql
	base   string // temporary directory, removed by Close
	data   string
	sock   string
	port   int
	runAs  string // "" for the current user
	dbs    atomic.Int64
	closed sync.Once
}

// Bin returns the directory of the newest installed PostgreSQL's binaries,
// or "" when none is installed.
func Bin() string {
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb")
	var dirs []string
	for _, m := range matches {
		dir := filepath.Dir(m)
		if isExec(filepath.Join(dir, "pg_ctl")) && isExec(filepath.Join(dir, "postgres")) && isExec(filepath.Join(dir, "psql")) {
			dirs = append(dirs, dir)
		}
	}
	if len(dirs) == 0 {
		return ""
	}
	version := func(dir string) int {
		v, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
		return v
	}
	slices.SortFunc(dirs, func(a, b string) int { return version(a) - version(b) })
	return dirs[len(dirs)-1]
}

func isExec(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// Start initializes and starts a cluster, and registers Close with
// t.Cleanup. Without PostgreSQL binaries it fails t, or skips it when
// SPIFFE_STS_SKIP_PG=1.
func Start(t testing.TB) *Cluster {
	t.Helper()
	bin := Bin()
	if bin == "" {
		if os.Getenv(SkipEnv) == "1" {
			t.Skipf("PostgreSQL binaries not found under /usr/lib/postgresql/*/bin; skipped because %s=1", SkipEnv)
		}
		t.Fatalf("PostgreSQL binaries (initdb, pg_ctl, postgres, psql) not found under /usr/lib/postgresql/*/bin: install the Debian package `postgresql` (apt-get install postgresql), or set %s=1 to skip these tests", SkipEnv)
	}
	c, err := start(bin)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

func start(bin string) (c *Cluster, err error) {
	c = &Cluster{bin: bin}
	if os.Geteuid() == 0 {
		if err := EnsureUser(); err != nil {
			return nil, err
		}
		c.runAs = User
	}
	if c.base, err = os.MkdirTemp("", "spiffe-sts-pgtest-"); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	c.data = filepath.Join(c.base, "data")
	c.sock = filepath.Join(c.base, "sock")
	for _, d := range []string{c.data, c.sock} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return nil, err
		}
	}
	if c.runAs != "" {
		u, err := user.Lookup(c.runAs)
		if err != nil {
			return nil, err
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		for _, p := range []string{c.base, c.data, c.sock} {
			if err := os.Chown(p, uid, gid); err != nil {
				return nil, err
			}
		}
	}
	if c.port, err = freePort(); err != nil {
		return nil, err
	}
	if out, err := c.run("initdb", "-D", c.data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"); err != nil {
		return nil, fmt.Errorf("initdb: %v: %s", err, out)
	}
	if err := c.start(); err != nil {
		return nil, err
	}
	return c, nil
}

// EnsureUser creates the system user User when it does not exist (it needs
// root). Other tests that run real servers unprivileged under root share it.
func EnsureUser() error {
	if _, err := user.Lookup(User); err == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", User).CombinedOutput()
	if err != nil {
		if _, lerr := user.Lookup(User); lerr == nil {
			return nil // created concurrently
		}
		return fmt.Errorf("useradd %s: %v: %s", User, err, out)
	}
	return nil
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// run runs a PostgreSQL binary as the cluster's user, bounded in time.
func (c *Cluster) run(name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	path := filepath.Join(c.bin, name)
	var cmd *exec.Cmd
	if c.runAs != "" {
		cmd = exec.CommandContext(ctx, "setpriv", append([]string{"--reuid=" + c.runAs, "--regid=" + c.runAs, "--init-groups", "--", path}, args...)...)
	} else {
		cmd = exec.CommandContext(ctx, path, args...)
	}
	cmd.Dir = c.base
	cmd.Env = append(os.Environ(), "LC_ALL=C", "PGTZ=UTC")
	return cmd.CombinedOutput()
}

func (c *Cluster) start() error {
	opts := fmt.Sprintf("-c listen_addresses=127.0.0.1 -p %d -c unix_socket_directories=%s -c fsync=off -c synchronous_commit=off -c full_page_writes=off", c.port, c.sock)
	if out, err := c.run("pg_ctl", "-D", c.data, "-l", filepath.Join(c.base, "postgres.log"), "-w", "-t", "30", "-o", opts, "start"); err != nil {
		log, _ := os.ReadFile(filepath.Join(c.base, "postgres.log"))
		return fmt.Errorf("pg_ctl start: %v: %s\n%s", err, out, log)
	}
	return nil
}

func (c *Cluster) stop(mode string) error {
	if out, err := c.run("pg_ctl", "-D", c.data, "-m", mode, "-w", "-t", "30", "stop"); err != nil {
		return fmt.Errorf("pg_ctl stop: %v: %s", err, out)
	}
	return nil
}

// Stop stops the server (fast shutdown), keeping its data: an outage.
func (c *Cluster) Stop(t testing.TB) {
	t.Helper()
	if err := c.stop("fast"); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
}

// Start starts a stopped server again on the same port and data.
func (c *Cluster) Start(t testing.TB) {
	t.Helper()
	if err := c.start(); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
}

// Port returns the TCP port on 127.0.0.1.
func (c *Cluster) Port() int { return c.port }

// DSN returns a connection string for database db ("postgres" when
// empty), for pgx.
func (c *Cluster) DSN(db string) string {
	if db == "" {
		db = "postgres"
	}
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/%s?sslmode=disable&connect_timeout=5", c.port, db)
}

// NewDatabase creates an empty database and returns its DSN.
func (c *Cluster) NewDatabase(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("test_%d", c.dbs.Add(1))
	if out, err := c.run("psql", "-h", c.sock, "-p", strconv.Itoa(c.port), "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-q", "-c", "CREATE DATABASE "+name); err != nil {
		t.Fatalf("pgtest: create database: %v: %s", err, strings.TrimSpace(string(out)))
	}
	return c.DSN(name)
}

// Close stops the server (immediately) and removes its directory. It is
// safe to call more than once.
func (c *Cluster) Close() {
	c.closed.Do(func() {
		if _, err := os.Stat(filepath.Join(c.data, "postmaster.pid")); err == nil {
			_ = c.stop("immediate")
		}
		_ = os.RemoveAll(c.base)
	})
}
