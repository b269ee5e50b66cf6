package loadgen

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
)

// Target is where the load goes: the token endpoint's URL, and the
// address every connection dials, resolved once.
type Target struct {
	// URL is the issuer URL (https://host[:port]).
	URL string
	// Network and Addr are dialed: "tcp" and ip:port, or "unix" and a path.
	Network, Addr string
}

// ErrRemote is returned by ResolveTarget for an address off this host.
var ErrRemote = errors.New("loadgen: not a loopback address")

// ResolveTarget checks the issuer URL and returns the address to load.
// connect, when not empty, is dialed instead of the URL's host: host:port
// or unix:///path. Unless allowRemote, the address must be on this host:
// 127.0.0.0/8, ::1 or a Unix socket; a host name must resolve to loopback
// addresses only, and the first is dialed, so that a later lookup cannot
// send the load elsewhere.
func ResolveTarget(ctx context.Context, issuerURL, connect string, allowRemote bool) (Target, error) {
	u, err := url.Parse(issuerURL)
	if err != nil || u.Scheme != "https" || u.Host == "" {
		return Target{}, fmt.Errorf("loadgen: %q is not an https URL", issuerURL)
	}
	t := Target{URL: strings.TrimSuffix(issuerURL, "/"), Network: "tcp"}
	hostport := u.Host
	if u.Port() == "" {
		hostport = net.JoinHostPort(u.Hostname(), "443")
	}
	if connect != "" {
		if path, ok := strings.CutPrefix(connect, "unix://"); ok {
			if path == "" {
				return Target{}, fmt.Errorf("loadgen: %q names no socket", connect)
			}
			t.Network, t.Addr = "unix", path
			return t, nil
		}
		hostport = connect
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return Target{}, fmt.Errorf("loadgen: address %q: %w", hostport, err)
	}
	var addrs []netip.Addr
	if ip, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{ip}
	} else {
		ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		if err != nil {
			return Target{}, fmt.Errorf("loadgen: resolving %s: %w", host, err)
		}
		addrs = ips
	}
	if len(addrs) == 0 {
		return Target{}, fmt.Errorf("loadgen: %s has no address", host)
	}
	if !allowRemote {
		for _, a := range addrs {
			if !IsLoopback(a) {
				return Target{}, fmt.Errorf("%w: %s is %s", ErrRemote, host, a)
			}
		}
	}
	t.Addr = net.JoinHostPort(addrs[0].Unmap().String(), port)
	return t, nil
}

// IsLoopback reports whether a is in 127.0.0.0/8 or is ::1 (an IPv4-mapped
// 127/8 address counts too).
func IsLoopback(a netip.Addr) bool {
	a = a.Unmap()
	return a.IsLoopback() && a.Zone() == ""
}

// dial dials t whatever address the HTTP or gRPC client asks for.
func (t Target) dial(ctx context.Context) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, t.Network, t.Addr)
}
