package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Timeouts for the steps of Start; each is also bounded by Start's context.
const (
	healthTimeout  = 30 * time.Second
	commandTimeout = 30 * time.Second
	// maxSocketPath is the usable length of a unix socket path on Linux
	// (sun_path is 108 bytes including the terminating NUL).
	maxSocketPath = 107
)

// Options configure [Start].
type Options struct {
	// TrustDomain is the SPIRE trust domain name; default "example.org".
	TrustDomain string
	// Logf receives progress lines (binary builds, start-up steps and their
	// timings); default: discard.
	Logf func(format string, args ...any)
	// LogLevel is the log_level of both SPIRE processes; default "INFO".
	// "DEBUG" shows workload attestation details (but floods the logs with
	// the one-second sync loop).
	LogLevel string
}

// SPIRE is a running spire-server and spire-agent pair on the loopback
// interface, rooted in a private temporary directory. Create one with
// [Start] or [StartT] and release it with [SPIRE.Stop].
type SPIRE struct {
	td       spiffeid.TrustDomain
	root     string
	binDir   string
	port     int
	logf     func(string, ...any)
	logLevel string
	agentID  string // SPIFFE ID given to the agent by the join token

	server    *Process
	agent     *Process
	agentArgs []string // the spire-agent command line, for StartAgent

	stopOnce sync.Once
}

// Start starts SPIRE for tests or a demo:
//
//   - it finds or builds the binaries with [SPIREBinaries];
//   - creates a short temporary root (os.MkdirTemp("", "spire"), mode 0755
//     so that workloads of any uid can reach the Workload API socket);
//   - writes server.conf and agent.conf (server on a free 127.0.0.1 port,
//     sqlite datastore, keys on disk in the data directories so that both
//     processes can restart ([SPIRE.StartServer], [SPIRE.StartAgent]),
//     join_token attestation; agent with the unix workload attestor and
//     discover_workload_path = true, so unix:path selectors work; one-second
//     cache reload and sync intervals so that new entries reach workloads
//     within about a second or two);
//   - starts spire-server and waits for its health check;
//   - writes the trust bundle, generates a join token for the agent alias
//     spiffe://<td>/agent, starts spire-agent with it and waits for its
//     health check.
//
// Each process logs to server.log or agent.log in the root ([SPIRE.Logs]).
// ctx bounds start-up only (including a possible SPIRE build); the processes
// run until [SPIRE.Stop]. On any error everything started is stopped and the
// root removed.
func Start(ctx context.Context, opts Options) (s *SPIRE, err error) {
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	tdName := opts.TrustDomain
	if tdName == "" {
		tdName = "example.org"
	}
	td, err := spiffeid.TrustDomainFromString(tdName)
	if err != nil {
		return nil, fmt.Errorf("harness: trust domain %q: %w", tdName, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("harness: start SPIRE: %w", err)
	}
	binDir, err := SPIREBinaries(ctx, logf)
	if err != nil {
		return nil, err
	}

	t0 := time.Now()
	root, err := makeRoot()
	if err != nil {
		return nil, err
	}
	level := opts.LogLevel
	if level == "" {
		level = "INFO"
	}
	s = &SPIRE{td: td, root: root, binDir: binDir, logf: logf, logLevel: level}
	defer func() {
		if err != nil {
			logs := s.Logs()
			s.Stop()
			err = fmt.Errorf("%w\n%s", err, logs)
			s = nil
		}
	}()
	for _, d := range []string{"server/data", "agent/data", "agent/public"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return s, fmt.Errorf("harness: %w", err)
		}
	}

	if err := s.startServer(ctx); err != nil {
		return s, err
	}
	logf("harness: spire-server healthy after %s (127.0.0.1:%d)", time.Since(t0).Round(time.Millisecond), s.port)

	bundle, err := s.ServerCmd(ctx, "bundle", "show")
	if err != nil {
		return s, err
	}
	if err := os.WriteFile(filepath.Join(root, "bundle.pem"), []byte(bundle), 0o644); err != nil {
		return s, fmt.Errorf("harness: write bundle: %w", err)
	}
	out, err := s.ServerCmd(ctx, "token", "generate", "-spiffeID", s.AgentAliasID(), "-ttl", "600")
	if err != nil {
		return s, err
	}
	token, ok := parseToken(out)
	if !ok {
		return s, fmt.Errorf("harness: no token in spire-server output: %q", out)
	}
	s.agentID = "spiffe://" + td.Name() + "/spire/agent/join_token/" + token

	if err := s.writeAgentConf(); err != nil {
		return s, err
	}
	t1 := time.Now()
	s.agentArgs = []string{"run", "-config", filepath.Join(root, "agent.conf"), "-joinToken", token}
	s.agent, err = StartProcess(filepath.Join(binDir, "spire-agent"), s.agentArgs, nil, filepath.Join(root, "agent.log"))
	if err != nil {
		return s, err
	}
	if err := s.waitHealthy(ctx, s.agent, "spire-agent", s.agentSocket()); err != nil {
		return s, err
	}
	logf("harness: spire-agent healthy after %s; SPIRE up in %s; Workload API %s",
		time.Since(t1).Round(time.Millisecond), time.Since(t0).Round(time.Millisecond), s.WorkloadAPIAddr())
	return s, nil
}

// makeRoot creates the temporary root, short enough for the socket paths.
func makeRoot() (string, error) {
	const longest = "/agent/public/api.sock"
	root, err := os.MkdirTemp("", "spire")
	if err == nil && len(root)+len(longest) > maxSocketPath {
		os.RemoveAll(root)
		root, err = os.MkdirTemp("/tmp", "spire")
	}
	if err != nil {
		return "", fmt.Errorf("harness: temp root: %w", err)
	}
	if err := os.Chmod(root, 0o755); err != nil {
		os.RemoveAll(root)
		return "", fmt.Errorf("harness: temp root: %w", err)
	}
	return root, nil
}

// startServer writes server.conf and starts spire-server, retrying with a
// new port if the one picked was taken in the meantime.
func (s *SPIRE) startServer(ctx context.Context) error {
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := FreePort()
		if err != nil {
			return err
		}
		s.port = port
		if err := s.writeServerConf(); err != nil {
			return err
		}
		s.server, err = StartProcess(filepath.Join(s.binDir, "spire-server"),
			[]string{"run", "-config", filepath.Join(s.root, "server.conf")},
			nil, filepath.Join(s.root, "server.log"))
		if err != nil {
			return err
		}
		lastErr = s.waitHealthy(ctx, s.server, "spire-server", s.serverSocket())
		if lastErr == nil {
			return nil
		}
		if !strings.Contains(s.server.Output(), "address already in use") {
			return lastErr
		}
		s.logf("harness: port %d was taken; retrying", port)
		_ = s.server.Stop()
		s.server = nil
		_ = os.RemoveAll(filepath.Join(s.root, "server", "data"))
		if err := os.MkdirAll(filepath.Join(s.root, "server", "data"), 0o755); err != nil {
			return fmt.Errorf("harness: %w", err)
		}
	}
	return lastErr
}

// waitHealthy polls `<bin> healthcheck -socketPath sock` until it succeeds,
// the process exits, or healthTimeout (or ctx) expires.
func (s *SPIRE) waitHealthy(ctx context.Context, p *Process, bin, sock string) error {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, healthTimeout)
	defer cancel()
	var last string
	for {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		out, err := exec.CommandContext(cctx, filepath.Join(s.binDir, bin), "healthcheck", "-socketPath", sock).CombinedOutput()
		ccancel()
		if err == nil {
			return nil
		}
		last = strings.TrimSpace(string(out))
		select {
		case <-p.Exited():
			return fmt.Errorf("harness: %s exited before becoming healthy: %v", bin, p.Err())
		case <-ctx.Done():
			return fmt.Errorf("harness: %s not healthy after %s (limit %s): %w (last health check: %s)",
				bin, time.Since(start).Round(time.Millisecond), healthTimeout, ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (s *SPIRE) serverSocket() string { return filepath.Join(s.root, "server", "api.sock") }
func (s *SPIRE) agentSocket() string  { return filepath.Join(s.root, "agent", "public", "api.sock") }

func (s *SPIRE) writeServerConf() error {
	conf := fmt.Sprintf(`server {
    bind_address = "127.0.0.1"
    bind_port = "%[1]d"
    socket_path = %[2]q
    trust_domain = %[3]q
    data_dir = %[4]q
    log_level = %[6]q
    ca_ttl = "24h"
    default_x509_svid_ttl = "1h"
    default_jwt_svid_ttl = "5m"
    ca_key_type = "ec-p256"
    experimental {
        cache_reload_interval = "1s"
    }
}

plugins {
    DataStore "sql" {
        plugin_data {
            database_type = "sqlite3"
            connection_string = %[5]q
        }
    }
    NodeAttestor "join_token" {
        plugin_data {}
    }
    KeyManager "disk" {
        plugin_data {
            keys_path = %[7]q
        }
    }
}
`, s.port, s.serverSocket(), s.td.Name(), filepath.Join(s.root, "server", "data"),
		filepath.Join(s.root, "server", "data", "datastore.sqlite3"), s.logLevel,
		filepath.Join(s.root, "server", "data", "keys.json"))
	return writeFile(filepath.Join(s.root, "server.conf"), conf)
}

func (s *SPIRE) writeAgentConf() error {
	conf := fmt.Sprintf(`agent {
    data_dir = %[1]q
    log_level = %[6]q
    server_address = "127.0.0.1"
    server_port = "%[2]d"
    socket_path = %[3]q
    trust_bundle_path = %[4]q
    trust_domain = %[5]q
    experimental {
        sync_interval = "1s"
    }
}

plugins {
    NodeAttestor "join_token" {
        plugin_data {}
    }
    KeyManager "disk" {
        plugin_data {
            directory = %[1]q
        }
    }
    WorkloadAttestor "unix" {
        plugin_data {
            discover_workload_path = true
        }
    }
}
`, filepath.Join(s.root, "agent", "data"), s.port, s.agentSocket(),
		filepath.Join(s.root, "bundle.pem"), s.td.Name(), s.logLevel)
	return writeFile(filepath.Join(s.root, "agent.conf"), conf)
}

func writeFile(path, content string) error {
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		return fmt.Errorf("harness: %w", err)
	}
	return nil
}

// parseToken extracts the token from `spire-server token generate` output.
func parseToken(out string) (string, bool) {
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Token:"); ok {
			if v = strings.TrimSpace(v); v != "" {
				return v, true
			}
		}
	}
	return "", false
}

// StopServer stops spire-server (SIGTERM, then SIGKILL after 5 seconds)
// and leaves the agent running: it keeps serving workloads from its cache
// but can renew nothing. Not safe for use concurrently with the other
// start and stop methods.
func (s *SPIRE) StopServer() error {
	if err := s.server.Stop(); err != nil {
		return err
	}
	s.logf("harness: spire-server stopped")
	return nil
}

// StartServer starts spire-server again after [SPIRE.StopServer], with the
// same configuration, port and data directory (datastore and CA keys), and
// waits for its health check. Its log is appended to server.log. The agent
// reconnects by itself at its next synchronization attempt, which backs
// off while the server is away (up to 48 × sync_interval, 48s here).
func (s *SPIRE) StartServer(ctx context.Context) error {
	p, err := s.restart(ctx, s.server, "spire-server", []string{"run", "-config", filepath.Join(s.root, "server.conf")}, s.serverSocket())
	if p != nil {
		s.server = p // for Stop, even if unhealthy
	}
	if err != nil {
		return err
	}
	s.logf("harness: spire-server restarted on 127.0.0.1:%d", s.port)
	return nil
}

// restart starts bin again with args once old has exited, appending to
// its log, and waits for its health check on sock. It returns the new
// process whenever one started, healthy or not.
func (s *SPIRE) restart(ctx context.Context, old *Process, bin string, args []string, sock string) (*Process, error) {
	select {
	case <-old.Exited():
	default:
		return nil, fmt.Errorf("harness: %s is running", bin)
	}
	p, err := startProcess(filepath.Join(s.binDir, bin), args, nil, old.LogPath(), os.O_APPEND)
	if err != nil {
		return nil, err
	}
	return p, s.waitHealthy(ctx, p, bin, sock)
}

// KillAgent kills spire-agent with SIGKILL, as a crash would, and waits
// for it to exit; its Workload API socket stops answering. The server
// keeps running.
func (s *SPIRE) KillAgent() error {
	if err := s.agent.Signal(os.Kill); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("harness: SIGKILL spire-agent: %w", err)
	}
	select {
	case <-s.agent.Exited():
	case <-time.After(healthTimeout):
		return fmt.Errorf("harness: spire-agent pid %d did not exit after SIGKILL", s.agent.Pid())
	}
	s.logf("harness: spire-agent killed")
	return nil
}

// StartAgent starts spire-agent again after [SPIRE.KillAgent] with the same
// configuration and data directory, and waits for its health check. The
// agent does not attest again (its join token is spent): it reloads its
// own SVID and key from the data directory (disk KeyManager) and resumes
// with the same agent ID, then issues workload SVIDs afresh. Its log is
// appended to agent.log.
func (s *SPIRE) StartAgent(ctx context.Context) error {
	p, err := s.restart(ctx, s.agent, "spire-agent", s.agentArgs, s.agentSocket())
	if p != nil {
		s.agent = p // for Stop, even if unhealthy
	}
	if err != nil {
		return err
	}
	s.logf("harness: spire-agent restarted")
	return nil
}

// Stop stops the agent and then the server (SIGTERM, up to 5 seconds each,
// then SIGKILL) and removes the temporary root. It is idempotent.
func (s *SPIRE) Stop() {
	s.stopOnce.Do(func() {
		for _, p := range []*Process{s.agent, s.server} {
			if p != nil {
				if err := p.Stop(); err != nil {
					s.logf("harness: %v", err)
				}
			}
		}
		if err := os.RemoveAll(s.root); err != nil {
			s.logf("harness: remove %s: %v", s.root, err)
		}
	})
}

// TrustDomain returns the trust domain the server issues identities in.
func (s *SPIRE) TrustDomain() spiffeid.TrustDomain { return s.td }

// WorkloadAPIAddr returns the agent's Workload API address in the form
// go-spiffe's workloadapi.WithAddr and SPIFFE_ENDPOINT_SOCKET expect:
// "unix:///<root>/agent/public/api.sock".
func (s *SPIRE) WorkloadAPIAddr() string { return "unix://" + s.agentSocket() }

// Dir returns the temporary root directory. Tests may put more files (for
// example workload binaries) in it; it is removed by [SPIRE.Stop].
func (s *SPIRE) Dir() string { return s.root }

// ServerAddr returns the server's "127.0.0.1:<port>" agent API address.
func (s *SPIRE) ServerAddr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// AgentAliasID returns the SPIFFE ID spiffe://<td>/agent that the agent's
// join token maps it to; [SPIRE.Register] uses it as the parent ID.
func (s *SPIRE) AgentAliasID() string { return "spiffe://" + s.td.Name() + "/agent" }

// AgentID returns the agent's own SPIFFE ID,
// spiffe://<td>/spire/agent/join_token/<token>.
func (s *SPIRE) AgentID() string { return s.agentID }

// Server returns the spire-server process.
func (s *SPIRE) Server() *Process { return s.server }

// Agent returns the spire-agent process.
func (s *SPIRE) Agent() *Process { return s.agent }

// Logs returns the last 200 lines of the server log followed by the last 200
// lines of the agent log, each under a header line.
func (s *SPIRE) Logs() string {
	var b strings.Builder
	for _, n := range []string{"server", "agent"} {
		path := filepath.Join(s.root, n+".log")
		fmt.Fprintf(&b, "==== spire-%s log (%s) ====\n", n, path)
		b.WriteString(tailLines(path, 200))
	}
	return b.String()
}

// Entry is a workload registration entry for [SPIRE.Register].
type Entry struct {
	// SPIFFEID is the full SPIFFE ID, e.g. "spiffe://example.org/web".
	SPIFFEID string
	// Selectors are type:value selectors, e.g. "unix:path:/abs/bin" or
	// "unix:uid:0". At least one is required.
	Selectors []string
	// X509SVIDTTL is the X509-SVID lifetime (whole seconds); 0 means the
	// server default (1h).
	X509SVIDTTL time.Duration
	// JWTSVIDTTL is the JWT-SVID lifetime (whole seconds); 0 means the
	// server default (5m).
	JWTSVIDTTL time.Duration
	// DNSNames are DNS SANs to put in the X509-SVIDs.
	DNSNames []string
}

// Register creates a workload registration entry parented to the agent
// (parent ID [SPIRE.AgentAliasID]), with `spire-server entry create`. The
// agent picks it up within a couple of seconds (one-second sync interval).
func (s *SPIRE) Register(ctx context.Context, e Entry) error {
	if e.SPIFFEID == "" || len(e.Selectors) == 0 {
		return errors.New("harness: Register: SPIFFEID and at least one selector are required")
	}
	args := []string{"entry", "create", "-parentID", s.AgentAliasID(), "-spiffeID", e.SPIFFEID}
	for _, sel := range e.Selectors {
		args = append(args, "-selector", sel)
	}
	if e.X509SVIDTTL > 0 {
		args = append(args, "-x509SVIDTTL", strconv.Itoa(ttlSeconds(e.X509SVIDTTL)))
	}
	if e.JWTSVIDTTL > 0 {
		args = append(args, "-jwtSVIDTTL", strconv.Itoa(ttlSeconds(e.JWTSVIDTTL)))
	}
	for _, d := range e.DNSNames {
		args = append(args, "-dns", d)
	}
	if _, err := s.ServerCmd(ctx, args...); err != nil {
		return err
	}
	s.logf("harness: registered %s %v", e.SPIFFEID, e.Selectors)
	return nil
}

// ttlSeconds rounds d up to whole seconds.
func ttlSeconds(d time.Duration) int {
	return int((d + time.Second - 1) / time.Second)
}

// ServerCmd runs `spire-server <args...>` against this server's API socket
// and returns its combined output. The -socketPath flag is inserted after
// the subcommand words (the leading arguments that do not start with "-")
// unless args already contain it, so ServerCmd(ctx, "entry", "show",
// "-spiffeID", id) works as expected. The command is bounded by ctx and by a
// 30 second timeout. A non-zero exit is an error that includes the output.
func (s *SPIRE) ServerCmd(ctx context.Context, args ...string) (string, error) {
	full := make([]string, 0, len(args)+2)
	i := 0
	for i < len(args) && !strings.HasPrefix(args[i], "-") {
		i++
	}
	full = append(full, args[:i]...)
	if !hasFlag(args, "socketPath") {
		full = append(full, "-socketPath", s.serverSocket())
	}
	full = append(full, args[i:]...)

	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, filepath.Join(s.binDir, "spire-server"), full...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("harness: spire-server %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// hasFlag reports whether args contain -name or --name (optionally =value).
func hasFlag(args []string, name string) bool {
	for _, a := range args {
		a = strings.TrimLeft(a, "-")
		if a == name || strings.HasPrefix(a, name+"=") {
			return true
		}
	}
	return false
}
