package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spiffe-sts/spiffe-sts/internal/pgtest"
)

// haproxyStartTimeout bounds StartHAProxy's wait for the listeners.
const haproxyStartTimeout = 30 * time.Second

// HAProxyBinary returns the path of the haproxy executable: the one on
// PATH, else /usr/sbin/haproxy (Debian's, which is not on a non-root
// PATH). .ci/install-packages installs the Debian package when both are
// absent.
func HAProxyBinary() (string, error) {
	if p, err := exec.LookPath("haproxy"); err == nil {
		return p, nil
	}
	const debian = "/usr/sbin/haproxy"
	if fi, err := os.Stat(debian); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
		return debian, nil
	}
	return "", errors.New("harness: haproxy not found on PATH or at /usr/sbin/haproxy: install the Debian package `haproxy` (.ci/install-packages does)")
}

// Unprivileged returns the user that real servers run as: "" (the current
// user) unless the tests run as root, in which case pgtest.User, created
// when absent. HAProxy, and the spiffe-sts-helper that writes its SVID,
// then run as that user, which shows that neither needs root.
func Unprivileged() (string, error) {
	if os.Geteuid() != 0 {
		return "", nil
	}
	if err := pgtest.EnsureUser(); err != nil {
		return "", fmt.Errorf("harness: %w", err)
	}
	return pgtest.User, nil
}

// MkdirFor creates a temporary directory (os.MkdirTemp("", pattern)) owned
// by runAs ("" for the current user), mode 0755, for files that a process
// running as runAs writes or reads. The caller removes it.
func MkdirFor(runAs, pattern string) (string, error) {
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		return "", fmt.Errorf("harness: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("harness: %w", err)
	}
	if runAs != "" {
		u, err := user.Lookup(runAs)
		if err != nil {
			os.RemoveAll(dir)
			return "", fmt.Errorf("harness: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		if err := os.Chown(dir, uid, gid); err != nil {
			os.RemoveAll(dir)
			return "", fmt.Errorf("harness: %w", err)
		}
	}
	return dir, nil
}

// StartProcessAs is [StartProcess] running bin as the user runAs through
// setpriv (as internal/pgtest does), or as the current user when runAs is
// "". setpriv execs bin, so the process ID, and the path SPIRE's unix
// workload attestor sees, are bin's own.
func StartProcessAs(runAs, bin string, args, env []string, logPath string) (*Process, error) {
	if runAs == "" {
		return StartProcess(bin, args, env, logPath)
	}
	wrapped := append([]string{"--reuid=" + runAs, "--regid=" + runAs, "--init-groups", "--", bin}, args...)
	return StartProcess("setpriv", wrapped, env, logPath)
}

// HAProxyIngress is a proxy in front of a server: it terminates mTLS
// (clients must present a certificate of the bundle in CA), forwards the
// client certificate as the RFC 9440 Client-Cert header (a Byte Sequence
// of the DER, §2.2) after deleting any forwarding header the client sent,
// and connects onwards over mTLS presenting its own SVID.
type HAProxyIngress struct {
	// Name names the frontend and backend sections.
	Name string
	// Listen is the address clients connect to, 127.0.0.1:port.
	Listen string
	// Server is the address of the server behind the proxy.
	Server string
	// ServerName is a DNS SAN of the server's X509-SVID: HAProxy sends it
	// as SNI and checks it (verifyhost), since it cannot check a SPIFFE
	// ID.
	ServerName string
	// Cert is the proxy's certificate chain and key in one PEM file, CA
	// the X.509 bundle (spiffe-sts-helper's combined_file and bundle_file,
	// read through its current link).
	Cert, CA string
}

// HAProxyEgress is a proxy beside a client that has no TLS of its own
// (exchangeclient.WithSidecar): it accepts plain HTTP on a loopback
// address, HTTP/1.1 or HTTP/2 with prior knowledge (h2c, as gRPC sends it:
// HAProxy tells them apart by the HTTP/2 preface), picks the server by the
// request's Host header (HTTP/2's :authority), and originates
// mTLS to it presenting Cert, the client's X509-SVID, so tokens the client
// obtains through it are bound to that certificate. A request for any
// other Host is refused (403). It forwards no certificate header, and
// deletes any the client sent. Every request gets its own connections
// (option httpclose), so that once a reload has loaded a rotated SVID no
// kept-alive connection of the old worker presents the old one.
type HAProxyEgress struct {
	// Name names the frontend; each route's backend is Name_<index>.
	Name string
	// Listen is the loopback address the client sends plain HTTP to.
	Listen string
	// Cert is the client's certificate chain and key in one PEM file, CA
	// the X.509 bundle.
	Cert, CA string
	// Routes map Host header values to servers.
	Routes []HAProxyRoute
}

// HAProxyRoute is a server an egress proxy reaches for requests whose Host
// header is Host.
type HAProxyRoute struct {
	// Host is the Host header value, as the client's URL has it
	// (host:port).
	Host string
	// Server is the server's address; ServerName a DNS SAN of its
	// X509-SVID, sent as SNI and checked (verifyhost).
	Server, ServerName string
	// HTTP2 makes the proxy reach the server over HTTP/2 (ALPN h2), as
	// gRPC needs.
	HTTP2 bool
}

// HAProxyOptions configure [StartHAProxy].
type HAProxyOptions struct {
	// Dir receives haproxy.cfg, the PID file and the log; it must be
	// writable by RunAs (see [MkdirFor]). Required.
	Dir string
	// RunAs is the user HAProxy runs as ("" for the current user); see
	// [Unprivileged].
	RunAs string
	// Ingress and Egress are the proxies; at least one.
	Ingress []HAProxyIngress
	Egress  []HAProxyEgress
}

// HAProxyConfig renders the configuration file for opts: master-worker
// mode (a SIGUSR2 to the master reloads the configuration and the
// certificate files without dropping the listeners), logs to standard
// error, and a frontend and backend per proxy. pidFile is the PID file the
// global section names.
func HAProxyConfig(opts HAProxyOptions, pidFile string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `global
    master-worker
    pidfile %s
    log stderr format raw local0 info
    # A reload lets the old worker finish its requests for at most this long.
    hard-stop-after 10s

defaults
    mode http
    log global
    option httplog
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 5s
`, pidFile)
	for _, in := range opts.Ingress {
		fmt.Fprintf(&b, `
frontend %[1]s
    bind %[2]s ssl crt %[3]s ca-file %[4]s verify required
    # Only this proxy says which certificate the client presented: drop
    # whatever the client sent, then forward its certificate (RFC 9440 §2).
    http-request del-header Client-Cert
    http-request del-header Client-Cert-Chain
    http-request del-header X-Forwarded-Client-Cert
    http-request set-header Client-Cert :%%[ssl_c_der,base64]:
    default_backend %[1]s

backend %[1]s
    server %[1]s %[5]s ssl crt %[3]s ca-file %[4]s verify required verifyhost %[6]s sni str(%[6]s)
`, in.Name, in.Listen, in.Cert, in.CA, in.Server, in.ServerName)
	}
	for _, eg := range opts.Egress {
		fmt.Fprintf(&b, `
frontend %[1]s
    bind %[2]s
    option httpclose
    http-request del-header Client-Cert
    http-request del-header Client-Cert-Chain
    http-request del-header X-Forwarded-Client-Cert
`, eg.Name, eg.Listen)
		hosts := make([]string, len(eg.Routes))
		for i, r := range eg.Routes {
			hosts[i] = r.Host
		}
		fmt.Fprintf(&b, "    http-request deny deny_status 403 unless { req.hdr(host) -m str %s }\n", strings.Join(hosts, " "))
		for i, r := range eg.Routes {
			fmt.Fprintf(&b, "    use_backend %s_%d if { req.hdr(host) -m str %s }\n", eg.Name, i, r.Host)
		}
		for i, r := range eg.Routes {
			alpn := ""
			if r.HTTP2 {
				alpn = " alpn h2"
			}
			fmt.Fprintf(&b, `
backend %[1]s_%[2]d
    server %[1]s_%[2]d %[3]s ssl crt %[4]s ca-file %[5]s verify required verifyhost %[6]s sni str(%[6]s)%[7]s
`, eg.Name, i, r.Server, eg.Cert, eg.CA, r.ServerName, alpn)
		}
	}
	return b.String()
}

// HAProxy is a running HAProxy master process (master-worker mode, in the
// foreground).
type HAProxy struct {
	*Process
	// ConfigPath is the generated haproxy.cfg.
	ConfigPath string
}

// StartHAProxy writes the configuration of opts to opts.Dir/haproxy.cfg,
// checks it with `haproxy -c`, and starts `haproxy -W -db -f haproxy.cfg`
// as opts.RunAs: a master in the foreground, no daemon and no system
// service. It waits until every Listen address accepts connections (at
// most 30 s, or until ctx ends). The certificate files must exist. On
// error the process is stopped and the error carries its log.
func StartHAProxy(ctx context.Context, opts HAProxyOptions) (*HAProxy, error) {
	if opts.Dir == "" || len(opts.Ingress)+len(opts.Egress) == 0 {
		return nil, errors.New("harness: StartHAProxy: Dir and at least one proxy are required")
	}
	bin, err := HAProxyBinary()
	if err != nil {
		return nil, err
	}
	h := &HAProxy{ConfigPath: filepath.Join(opts.Dir, "haproxy.cfg")}
	config := HAProxyConfig(opts, filepath.Join(opts.Dir, "haproxy.pid"))
	if err := os.WriteFile(h.ConfigPath, []byte(config), 0o644); err != nil {
		return nil, fmt.Errorf("harness: write haproxy.cfg: %w", err)
	}
	check := exec.CommandContext(ctx, bin, "-c", "-f", h.ConfigPath)
	if opts.RunAs != "" {
		check = exec.CommandContext(ctx, "setpriv", "--reuid="+opts.RunAs, "--regid="+opts.RunAs, "--init-groups", "--", bin, "-c", "-f", h.ConfigPath)
	}
	if out, err := check.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("harness: haproxy -c: %w\n%s\n%s", err, out, config)
	}
	if h.Process, err = StartProcessAs(opts.RunAs, bin, []string{"-W", "-db", "-f", h.ConfigPath}, nil, filepath.Join(opts.Dir, "haproxy.log")); err != nil {
		return nil, err
	}
	var listen []string
	for _, in := range opts.Ingress {
		listen = append(listen, in.Listen)
	}
	for _, eg := range opts.Egress {
		if len(eg.Routes) == 0 {
			return nil, fmt.Errorf("harness: StartHAProxy: egress %s has no routes", eg.Name)
		}
		listen = append(listen, eg.Listen)
	}
	ctx, cancel := context.WithTimeout(ctx, haproxyStartTimeout)
	defer cancel()
	for _, addr := range listen {
		for {
			c, err := (&net.Dialer{Timeout: time.Second}).DialContext(ctx, "tcp", addr)
			if err == nil {
				c.Close()
				break
			}
			select {
			case <-h.Exited():
				return nil, fmt.Errorf("harness: haproxy exited during start-up: %v\n%s", h.Err(), h.Output())
			case <-ctx.Done():
				_ = h.Stop()
				return nil, fmt.Errorf("harness: haproxy not listening on %s: %w\n%s", addr, ctx.Err(), h.Output())
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return h, nil
}

// Reload sends SIGUSR2 to the master, which re-reads the configuration and
// the certificate files and starts new workers; the old ones finish their
// requests. It does not wait: see [HAProxy.Reloads].
func (h *HAProxy) Reload() error { return h.Signal(syscall.SIGUSR2) }

// Reloads returns how many times the master has loaded the configuration
// successfully since it started ("Loading success" in its log), the start
// included.
func (h *HAProxy) Reloads() int { return strings.Count(h.Output(), "Loading success") }
