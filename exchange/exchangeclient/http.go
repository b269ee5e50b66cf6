package exchangeclient

import (
	"errors"
	"net/http"
	"sync"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
)

// RoundTripper returns an http.RoundTripper that sends each request over
// mTLS, presenting the current X509-SVID, with "Authorization: Bearer
// <token>" bound to that certificate; authorizer checks the resource
// server (for example tlsconfig.AuthorizeID). Any Authorization header of
// the request is replaced. It refuses URLs that are not https.
//
// It keeps one *http.Transport per client certificate, each presenting
// only that certificate, so a request's token always matches its
// connection. After a rotation new requests go to the new certificate's
// transport at once; the previous transport finishes its requests in
// flight and is closed when the client's Clock reaches its certificate's
// NotAfter.
//
// With WithSidecar, authorizer is not used (the sidecar authenticates the
// server) and http URLs are accepted too: every request goes in plain
// HTTP/1.1 to the sidecar, Host naming the URL's host, with the token
// bound to the sidecar's certificate. A 401 whose challenge says
// refusal="binding_mismatch" (accesstoken.RefusalBindingMismatch) makes it
// re-bind the token once, shared with concurrent callers, and send the
// request again once, when its body can be replayed (no body, or
// GetBody); any other refusal, or a failed re-binding, returns the
// response as it came.
func (t *Tokens) RoundTripper(authorizer tlsconfig.Authorizer, opts ...RoundTripperOption) http.RoundTripper {
	var cfg roundTripperConfig
	for _, opt := range opts {
		opt.configureRoundTripper(&cfg)
	}
	if t.sidecar != nil {
		return t.sidecarRoundTripper(cfg)
	}
	base := cfg.base
	if base == nil {
		base = http.DefaultTransport.(*http.Transport).Clone()
		base.ForceAttemptHTTP2 = true
	} else {
		base = base.Clone()
	}
	rt := &roundTripper{t: t, authorizer: authorizer, base: base, transports: map[*entry]*http.Transport{}}
	t.onClose(rt.close)
	return rt
}

type roundTripper struct {
	t          *Tokens
	authorizer tlsconfig.Authorizer
	base       *http.Transport

	mu         sync.Mutex
	closed     bool
	last       *entry
	transports map[*entry]*http.Transport
}

var errNotHTTPS = errors.New("exchangeclient: the RoundTripper sends tokens over https only")

func (rt *roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	fail := func(err error) (*http.Response, error) {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, err
	}
	if req.URL == nil || req.URL.Scheme != "https" {
		return fail(errNotHTTPS)
	}
	e, err := rt.t.handshakeEntry()
	if err != nil {
		return fail(err)
	}
	h, err := rt.t.token(req.Context(), e, e.leaf)
	if err != nil {
		return fail(err)
	}
	tr, err := rt.transport(e)
	if err != nil {
		return fail(err)
	}
	// A RoundTripper must not modify the request (net/http).
	out := new(http.Request)
	*out = *req
	out.Header = req.Header.Clone()
	if out.Header == nil {
		out.Header = http.Header{}
	}
	out.Header.Set("Authorization", h.header)
	return tr.RoundTrip(out)
}

// transport returns the transport presenting e's SVID.
func (rt *roundTripper) transport(e *entry) (*http.Transport, error) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.closed {
		return nil, ErrTokensClosed
	}
	if tr, ok := rt.transports[e]; ok {
		return tr, nil
	}
	tr := rt.base.Clone()
	if tr.TLSClientConfig == nil {
		tr.TLSClientConfig = tlsconfig.MTLSClientConfig(e.svid, rt.t.c.source, rt.authorizer)
	} else {
		tlsconfig.HookMTLSClientConfig(tr.TLSClientConfig, e.svid, rt.t.c.source, rt.authorizer)
	}
	rt.transports[e] = tr
	if prev := rt.last; prev != nil && prev != e {
		// Requests now go to e: prev's idle connections will not be used
		// again, and its busy ones end with their requests, or with the
		// certificate.
		old := rt.transports[prev]
		old.CloseIdleConnections()
		rt.retireAt(prev)
	}
	rt.last = e
	return tr, nil
}

// retireAt retires e's transport when the client's clock reaches e's
// NotAfter, in a goroutine of Tokens that ends with it: Close waits for
// it, then closes every transport. The timer is set before retireAt
// returns, so a fake clock advanced afterwards fires it.
func (rt *roundTripper) retireAt(e *entry) {
	t := rt.t
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return // Close closes every transport
	}
	t.wg.Add(1)
	t.mu.Unlock()
	clock := t.c.clock
	expired := clock.After(e.notAfter.Sub(clock.Now()))
	go func() {
		defer t.wg.Done()
		select {
		case <-t.life.Done():
		case <-expired:
			rt.retire(e)
		}
	}()
}

// retire closes the transport of e, whose certificate has expired.
func (rt *roundTripper) retire(e *entry) {
	rt.mu.Lock()
	tr := rt.transports[e]
	delete(rt.transports, e)
	rt.mu.Unlock()
	if tr != nil {
		tr.CloseIdleConnections()
	}
}

func (rt *roundTripper) close() {
	rt.mu.Lock()
	rt.closed = true
	transports := rt.transports
	rt.transports = map[*entry]*http.Transport{}
	rt.mu.Unlock()
	for _, tr := range transports {
		tr.CloseIdleConnections()
	}
}
