package exchangeclient

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
)

// WithSidecar makes the client reach the STS, and Tokens' RoundTripper
// reach resource servers, through an egress sidecar that originates mTLS
// with the workload's X509-SVID, for a workload that never holds its
// certificate. addr is where the sidecar listens for plain HTTP:
// http://127.0.0.1:port, http://[::1]:port (a loopback IP literal; names
// such as localhost are refused, as they resolve through DNS or a hosts
// file) or unix:///absolute/path of a Unix socket. Anything else is
// refused by New: a token sent in plain HTTP must not leave the host.
//
// Every token request and every request of Tokens' RoundTripper is sent
// to addr as HTTP/1.1 with its Host header naming the real destination
// (the issuer URL's host for token requests, the request URL's host for
// resource calls), which is how the sidecar picks its upstream; gRPC
// calls made with Tokens.GRPCDialOptions go to addr as HTTP/2 in clear
// text (h2c), :authority naming the destination. No X509Source is used,
// and WithX509Source, WithWorkloadAPIAddr, WithServerID and WithGRPC
// (token requests go to the sidecar over HTTP/1.1) are refused with it:
// the sidecar authenticates the servers, and the STS binds tokens to the
// certificate the sidecar presents to it.
//
// When that certificate rotates, the token Tokens holds stops matching the
// sidecar's connections. Tokens' RoundTripper and gRPC calls then see the
// resource server refuse it with a binding mismatch
// (accesstoken.RefusalBindingMismatch), re-bind it once (an RFC 8693
// exchange of the old token, which the STS binds to the sidecar's current
// certificate) and make the call again once; see Tokens.RoundTripper and
// Tokens.GRPCDialOptions.
func WithSidecar(addr string) Option {
	return optionFunc(func(c *clientConfig) { c.sidecar = addr })
}

// sidecarDialer dials the sidecar for every connection, whatever the
// address asked for.
type sidecarDialer struct {
	network, address string
	dialer           net.Dialer
}

func (d *sidecarDialer) DialContext(ctx context.Context, _, _ string) (net.Conn, error) {
	return d.dialer.DialContext(ctx, d.network, d.address)
}

// parseSidecar checks a WithSidecar address: plain HTTP on a loopback IP
// literal with a port, or an absolute Unix socket path; no path, query,
// fragment or user information.
func parseSidecar(raw string) (network, address string, err error) {
	refuse := func(why string) (string, string, error) {
		return "", "", fmt.Errorf("exchangeclient: sidecar address %q: %s", raw, why)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return refuse("not a URL")
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return refuse("want http://loopback-ip:port or unix:///path, without user, query or fragment")
	}
	switch u.Scheme {
	case "unix":
		if u.Host != "" || !path.IsAbs(u.Path) || path.Clean(u.Path) != u.Path {
			return refuse("want unix:///absolute/path")
		}
		return "unix", u.Path, nil
	case "http":
		if u.Path != "" && u.Path != "/" {
			return refuse("a path is not allowed")
		}
		ip, err := netip.ParseAddr(u.Hostname())
		if err != nil || !ip.IsLoopback() || ip.Zone() != "" {
			return refuse("the host must be a loopback IP address (127.0.0.1, [::1]): tokens travel in plain HTTP")
		}
		if u.Port() == "" {
			return refuse("a port is required")
		}
		return "tcp", u.Host, nil
	default:
		return refuse("the scheme must be http or unix; the sidecar originates TLS")
	}
}

// newSidecarClient is New with WithSidecar: cfg is checked but for the
// sidecar address and the options it excludes, and tokenURL is the
// issuer's token endpoint.
func newSidecarClient(cfg *clientConfig, tokenURL string) (*Client, error) {
	switch {
	case cfg.sourceSet || cfg.workloadAddr != "":
		return nil, errors.New("exchangeclient: WithSidecar takes no X509 source: the sidecar holds the X509-SVID")
	case !cfg.serverID.IsZero():
		return nil, errors.New("exchangeclient: WithSidecar and WithServerID: the sidecar authenticates the server")
	case cfg.grpc:
		return nil, errors.New("exchangeclient: WithSidecar and WithGRPC: token requests go to the sidecar over HTTP/1.1 (gRPC calls to resource servers: Tokens.GRPCDialOptions)")
	}
	network, address, err := parseSidecar(cfg.sidecar)
	if err != nil {
		return nil, err
	}
	c := &Client{timeout: cfg.timeout, clock: cfg.clock, sidecar: &sidecarDialer{network: network, address: address}}
	c.sidecar.dialer = net.Dialer{Timeout: cfg.timeout, KeepAlive: 30 * time.Second}
	if c.clock == nil {
		c.clock = systemClock{}
	}
	// The same endpoint in plain HTTP, Host naming the STS.
	c.tokenURL = "http://" + strings.TrimPrefix(tokenURL, "https://")
	transport := c.sidecarTransport(nil)
	c.sts.Store(&svidConn{sts: &stsConn{transport: transport, http: &http.Client{
		Transport:     transport,
		Timeout:       c.timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}})
	if cfg.metrics != nil {
		if c.metrics, err = newClientMetrics(cfg.metrics); err != nil {
			return nil, err
		}
	}
	return c, nil
}

// sidecarTransport returns a plain HTTP/1.1 transport that dials only the
// sidecar: a clone of base, or a default one when base is nil, without
// proxies or TLS.
func (c *Client) sidecarTransport(base *http.Transport) *http.Transport {
	var tr *http.Transport
	if base != nil {
		tr = base.Clone()
	} else {
		tr = &http.Transport{
			TLSHandshakeTimeout: c.timeout,
			IdleConnTimeout:     90 * time.Second,
			MaxIdleConnsPerHost: 4,
		}
	}
	tr.Proxy = nil
	tr.DialContext = c.sidecar.DialContext
	tr.DialTLSContext = nil
	tr.TLSClientConfig = nil
	tr.ForceAttemptHTTP2 = false
	tr.Protocols = nil
	return tr
}

// sidecarNotAfter stands for the NotAfter of the certificate the sidecar
// presents, which the workload does not know: tokens are refreshed by
// their own lifetime only.
var sidecarNotAfter = time.Unix(math.MaxInt32, 0)

// newSidecarTokens is NewTokens with WithSidecar: one token, for whatever
// certificate the sidecar presents, kept in an entry without a
// certificate.
func (c *Client) newSidecarTokens(ctx context.Context, req Request, cfg tokensConfig) (*Tokens, error) {
	check := req
	if cfg.subjectToken != nil && check.SubjectToken == "" {
		check.SubjectToken = "placeholder"
	}
	if _, err := check.params(spiffeid.ID{}); err != nil {
		return nil, err
	}
	t := &Tokens{c: c, req: req, events: cfg.events, subjectToken: cfg.subjectToken}
	t.life, t.stop = context.WithCancel(context.Background())
	t.entries.Store(&map[*x509.Certificate]*entry{})
	e := &entry{
		owner:    t,
		svid:     &x509svid.SVID{}, // no ID: the STS takes it from the sidecar's certificate
		notAfter: sidecarNotAfter,
		sts:      c.sts.Load().sts,
		wake:     make(chan struct{}, 1),
	}
	t.sidecar = e
	t.onClose(func() {
		e.dropped.Store(true)
		e.tok.Store(nil)
	})
	if err := t.awaitFirst(ctx, e); err != nil {
		return nil, err
	}
	e.used.Store(true)
	t.wg.Add(1)
	go t.maintain(e)
	return t, nil
}

// rebindSidecar returns a token to replace stale, which a resource server
// refused as bound to another certificate: the entry's token if another
// caller has already replaced stale, else the result of one re-binding
// (RFC 8693 exchange of stale, or the original grant once stale has
// expired or the exchange failed) that concurrent callers share.
func (t *Tokens) rebindSidecar(ctx context.Context, e *entry, stale *heldToken) (*heldToken, error) {
	if h := e.tok.Load(); h != nil && h != stale && t.c.clock.Now().Before(h.usableUntil) {
		return h, nil
	}
	f := t.acquire(e, stale, time.Time{}, true)
	select {
	case <-f.done:
	case <-ctx.Done():
		return nil, fmt.Errorf("exchangeclient: waiting for a re-bound token: %w", ctx.Err())
	}
	if f.err != nil {
		return nil, f.err
	}
	return f.tok, nil
}

// sidecarCall makes one call in the sidecar mode: attempt with h, the
// held token, and when attempt reports that the resource server refused
// it as bound to another certificate (accesstoken.RefusalBindingMismatch),
// once more with the token re-bound to the sidecar's current certificate
// (rebindSidecar, shared with concurrent callers). The token is re-bound
// after every mismatch, even for a call that cannot be made again, so
// that the next call presents one the resource server accepts. again,
// called with the refused result once the re-binding has succeeded,
// readies the second attempt and reports false when the call cannot be
// made again. A failed re-binding, or a call that cannot be made again,
// returns the refusal: it tells the caller more than why re-binding
// failed, which Events report. The second attempt's result is returned
// whatever it is, so a second mismatch is never retried.
func sidecarCall[R any](ctx context.Context, t *Tokens, h *heldToken, attempt func(*heldToken) (R, bool, error), again func(R) bool) (R, error) {
	res, mismatch, err := attempt(h)
	if !mismatch {
		return res, err
	}
	fresh, rebindErr := t.rebindSidecar(ctx, t.sidecar, h)
	if rebindErr != nil || !again(res) {
		return res, err
	}
	res, _, err = attempt(fresh)
	return res, err
}

// errSidecarNoTLS is returned by TransportCredentials in the sidecar mode.
var errSidecarNoTLS = errors.New("exchangeclient: with WithSidecar the sidecar originates TLS: TransportCredentials do not apply")

// sidecarRoundTripper is Tokens.RoundTripper with WithSidecar.
type sidecarRoundTripper struct {
	t         *Tokens
	e         *entry
	transport *http.Transport
}

func (t *Tokens) sidecarRoundTripper(cfg roundTripperConfig) http.RoundTripper {
	rt := &sidecarRoundTripper{t: t, e: t.sidecar, transport: t.c.sidecarTransport(cfg.base)}
	t.onClose(rt.transport.CloseIdleConnections)
	return rt
}

var errNotHTTPURL = errors.New("exchangeclient: the sidecar RoundTripper sends http and https URLs only")

// RoundTrip sends req to the sidecar with the token, and on a binding
// mismatch re-binds, and retries once when the body can be sent again.
func (rt *sidecarRoundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	fail := func(err error) (*http.Response, error) {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	if req.URL == nil || (req.URL.Scheme != "https" && req.URL.Scheme != "http") || req.URL.Host == "" {
		return fail(errNotHTTPURL)
	}
	ctx := req.Context()
	h, err := rt.t.token(ctx, rt.e, nil)
	if err != nil {
		return fail(err)
	}
	replayable := req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
	body := req.Body
	attempt := func(h *heldToken) (*http.Response, bool, error) {
		resp, err := rt.send(req, body, h)
		return resp, err == nil && isBindingMismatch(resp), err
	}
	again := func(refused *http.Response) bool {
		if !replayable {
			return false
		}
		if req.GetBody != nil {
			var err error
			if body, err = req.GetBody(); err != nil {
				return false
			}
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(refused.Body, maxResponseBytes))
		refused.Body.Close()
		return true
	}
	return sidecarCall(ctx, rt.t, h, attempt, again)
}

// send sends a copy of req with body and h's token to the sidecar, in
// plain HTTP whatever req's scheme (the sidecar originates TLS).
func (rt *sidecarRoundTripper) send(req *http.Request, body io.ReadCloser, h *heldToken) (*http.Response, error) {
	out := new(http.Request)
	*out = *req
	out.Body = body
	u := *req.URL
	u.Scheme = "http"
	out.URL = &u
	out.Header = req.Header.Clone()
	if out.Header == nil {
		out.Header = http.Header{}
	}
	out.Header.Set("Authorization", h.header)
	return rt.transport.RoundTrip(out)
}

// isBindingMismatch reports whether resp refuses the token as bound to
// another certificate (accesstoken.RefusalBindingMismatch).
func isBindingMismatch(resp *http.Response) bool {
	if resp.StatusCode != http.StatusUnauthorized {
		return false
	}
	c, ok := accesstoken.ParseChallenge(resp.Header.Values("WWW-Authenticate"))
	return ok && c.Error == "invalid_token" && c.Refusal == accesstoken.RefusalBindingMismatch
}

// sidecarToken is Tokens.Token with WithSidecar.
func (t *Tokens) sidecarToken(ctx context.Context) (string, error) {
	h, err := t.token(ctx, t.sidecar, nil)
	if err != nil {
		return "", err
	}
	return h.raw, nil
}
