package exchangeclient

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
)

// X509Source is what the client needs of a go-spiffe source: the X509-SVID
// it authenticates with and the bundles that verify the server.
// *workloadapi.X509Source satisfies it.
type X509Source interface {
	x509svid.Source
	x509bundle.Source
}

const (
	defaultTimeout = 10 * time.Second
	// maxResponseBytes bounds the token endpoint response read into memory.
	maxResponseBytes = 1 << 20
)

// errClosed is returned by Exchange after Close.
var errClosed = errors.New("exchangeclient: client is closed")

// Client requests access tokens from a spiffe-sts token endpoint over mTLS.
// It is safe for concurrent use.
type Client struct {
	tokenURL   string
	source     X509Source
	ownSource  io.Closer // the source New created, nil when the caller gave one
	authorizer tlsconfig.Authorizer
	timeout    time.Duration
	useGRPC    bool
	clock      Clock
	metrics    *clientMetrics // nil without WithMetrics
	// sts sends token requests presenting the source's current SVID; see
	// stsFor. stsMu serializes its replacement.
	sts   atomic.Pointer[svidConn]
	stsMu sync.Mutex
	// sidecar, with WithSidecar, dials the egress sidecar; source is nil,
	// and sts holds the one connection pool to it (no leaf).
	sidecar *sidecarDialer

	closed    atomic.Bool
	closeOnce sync.Once
	closeErr  error
}

// New returns a Client for the STS at the WithIssuerURL URL.
//
// Without WithX509Source, New creates a workloadapi.X509Source (see
// WithWorkloadAPIAddr) and blocks until it has received the first
// X509-SVID or ctx is done. ctx is used only for that wait.
func New(ctx context.Context, opts ...Option) (*Client, error) {
	cfg := clientConfig{timeout: defaultTimeout}
	for _, opt := range opts {
		opt.configureClient(&cfg)
	}
	tokenURL, err := tokenEndpoint(cfg.issuerURL)
	if err != nil {
		return nil, err
	}
	switch {
	case cfg.timeout <= 0:
		return nil, fmt.Errorf("exchangeclient: timeout must be positive, got %v", cfg.timeout)
	case cfg.sourceSet && cfg.source == nil:
		return nil, errors.New("exchangeclient: WithX509Source was given a nil source")
	case cfg.sidecar != "":
		return newSidecarClient(&cfg, tokenURL)
	}

	c := &Client{tokenURL: tokenURL, source: cfg.source, timeout: cfg.timeout, useGRPC: cfg.grpc}
	c.clock = cfg.clock
	if c.clock == nil {
		c.clock = systemClock{}
	}
	if cfg.metrics != nil {
		if c.metrics, err = newClientMetrics(cfg.metrics); err != nil {
			return nil, err
		}
	}
	if !cfg.sourceSet {
		var srcOpts []workloadapi.X509SourceOption
		if cfg.workloadAddr != "" {
			srcOpts = append(srcOpts, workloadapi.WithClientOptions(workloadapi.WithAddr(cfg.workloadAddr)))
		}
		src, err := workloadapi.NewX509Source(ctx, srcOpts...)
		if err != nil {
			c.metrics.unregister(cfg.metrics)
			return nil, fmt.Errorf("exchangeclient: X509-SVID from the Workload API: %w", err)
		}
		c.source, c.ownSource = src, src
	} else if _, err := c.source.GetX509SVID(); err != nil {
		c.metrics.unregister(cfg.metrics)
		return nil, fmt.Errorf("exchangeclient: the source has no X509-SVID: %w", err)
	}

	c.authorizer = serverAuthorizer(c.source, cfg.serverID)
	// Exchange sends over connections that present the source's current
	// X509-SVID, replaced when it rotates (stsFor).
	svid, err := c.source.GetX509SVID()
	if err == nil {
		_, err = c.stsFor(svid)
	}
	if err != nil {
		if c.ownSource != nil {
			_ = c.ownSource.Close()
		}
		c.metrics.unregister(cfg.metrics)
		return nil, err
	}
	return c, nil
}

// httpClient returns an HTTP client for the token endpoint that presents
// the SVIDs of svids and verifies the server with the client's bundles.
// Given a single *x509svid.SVID (a static source) every connection it makes
// presents exactly that certificate, so the tokens it obtains are bound to
// it.
func (c *Client) httpClient(svids x509svid.Source) (*http.Client, *http.Transport) {
	dialer := &net.Dialer{Timeout: c.timeout, KeepAlive: 30 * time.Second}
	transport := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		DialContext:         dialer.DialContext,
		TLSClientConfig:     tlsconfig.MTLSClientConfig(svids, c.source, c.authorizer),
		ForceAttemptHTTP2:   true,
		TLSHandshakeTimeout: c.timeout,
		IdleConnTimeout:     90 * time.Second,
		MaxIdleConnsPerHost: 4,
	}
	return &http.Client{
		Transport: transport,
		Timeout:   c.timeout,
		// A token request is never redirected: following one could send
		// the subject token somewhere else.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}, transport
}

// serverAuthorizer authorizes exactly id, or else any member of the trust
// domain of the client's current X509-SVID.
func serverAuthorizer(src x509svid.Source, id spiffeid.ID) tlsconfig.Authorizer {
	if !id.IsZero() {
		return tlsconfig.AuthorizeID(id)
	}
	return func(actual spiffeid.ID, chains [][]*x509.Certificate) error {
		svid, err := src.GetX509SVID()
		if err != nil {
			return fmt.Errorf("exchangeclient: no X509-SVID to take the trust domain from: %w", err)
		}
		return tlsconfig.AuthorizeMemberOf(svid.ID.TrustDomain())(actual, chains)
	}
}

// tokenEndpoint validates the issuer URL with the server's rule,
// protocol.CheckIssuerURL (https://host[:port], no path), and returns the
// token endpoint.
func tokenEndpoint(issuer string) (string, error) {
	if issuer == "" {
		return "", errors.New("exchangeclient: the issuer URL is required (WithIssuerURL)")
	}
	if err := protocol.CheckIssuerURL(issuer); err != nil {
		return "", fmt.Errorf("exchangeclient: issuer URL %q %w", issuer, err)
	}
	return issuer + protocol.PathToken, nil
}

// Request is a token request. With a SubjectToken it is an RFC 8693 §2.1
// token exchange; without one it is an RFC 6749 §4.4 client_credentials
// grant for the client's own SPIFFE ID.
type Request struct {
	// SubjectToken is the token to exchange, normally a JWT-SVID whose
	// audience is the issuer URL. Empty means client_credentials.
	SubjectToken string
	// SubjectTokenType is the type of SubjectToken; protocol.TokenTypeJWT
	// when zero and SubjectToken is set. It must be zero otherwise.
	SubjectTokenType protocol.TokenType
	// Audience and Resource name where the token will be used (RFC 8693
	// §2.1, RFC 8707); the token's "aud" holds them all.
	Audience, Resource []string
	// Scope is the requested scope; values are space-joined.
	Scope []string
	// RequestedTokenType is the type of token wanted; the server's default
	// (protocol.TokenTypeAccessToken) when zero.
	RequestedTokenType protocol.TokenType
	// Impersonate asks for a token for the subject without an act claim,
	// where the caller's policy allows impersonation.
	Impersonate bool
}

// Token is an issued access token.
type Token struct {
	// AccessToken is the RFC 9068 JWT, bound to the client's X509-SVID
	// (RFC 8705 §3.1). It is a secret: never log it.
	AccessToken string
	// IssuedTokenType is the RFC 8693 §2.2.1 issued_token_type; zero for
	// client_credentials.
	IssuedTokenType protocol.TokenType
	// TokenType is the token_type, "Bearer".
	TokenType string
	// Expiry is when the token expires: the time the request was sent plus
	// expires_in, so it errs early.
	Expiry time.Time
	// Scope is the granted scope; the requested scope when the server
	// omitted it, which means it granted the request (RFC 6749 §5.1).
	Scope []string
}

// wireRequest is a token request as sent (RFC 8693 §2.1, RFC 6749
// §4.4.2): the client's own type, encoded with the protocol parameter
// names, never the server's parse type.
type wireRequest struct {
	grantType          protocol.GrantType
	clientID           string
	scope              string
	audience           []string
	resource           []string
	subjectToken       string
	subjectTokenType   protocol.TokenType
	requestedTokenType protocol.TokenType
	impersonate        bool
}

// params returns req as RFC 8693 §2.1 parameters, the same for the form
// and the gRPC API. clientID is sent as RFC 8705 §2 requires for
// tls_client_auth.
func (req *Request) params(clientID spiffeid.ID) (wireRequest, error) {
	p := wireRequest{
		clientID:           clientID.String(),
		scope:              joinScope(req.Scope),
		audience:           req.Audience,
		resource:           req.Resource,
		requestedTokenType: req.RequestedTokenType,
		impersonate:        req.Impersonate,
	}
	if req.SubjectToken == "" {
		if !req.SubjectTokenType.IsZero() {
			return wireRequest{}, errors.New("exchangeclient: SubjectTokenType is set without a SubjectToken")
		}
		p.grantType = protocol.GrantTypeClientCredentials
		return p, nil
	}
	p.grantType = protocol.GrantTypeTokenExchange
	p.subjectToken = req.SubjectToken
	p.subjectTokenType = req.SubjectTokenType
	if p.subjectTokenType.IsZero() {
		p.subjectTokenType = protocol.TokenTypeJWT
	}
	return p, nil
}

// encodeForm encodes p as an application/x-www-form-urlencoded body
// (RFC 6749 §3.2), leaving out empty parameters, which the server treats
// as omitted anyway.
func encodeForm(p *wireRequest) string {
	form := url.Values{}
	for _, kv := range []struct{ key, value string }{
		{protocol.ParamGrantType, p.grantType.String()},
		{protocol.ParamClientID, p.clientID},
		{protocol.ParamScope, p.scope},
		{protocol.ParamSubjectToken, p.subjectToken},
		{protocol.ParamSubjectTokenType, p.subjectTokenType.String()},
		{protocol.ParamRequestedTokenType, p.requestedTokenType.String()},
	} {
		if kv.value != "" {
			form.Set(kv.key, kv.value)
		}
	}
	form[protocol.ParamAudience] = p.audience
	form[protocol.ParamResource] = p.resource
	if p.impersonate {
		form.Set(protocol.ParamImpersonate, "true")
	}
	return form.Encode()
}

// joinScope space-joins scope values (RFC 6749 §3.3), dropping empty ones.
func joinScope(scope []string) string {
	return strings.Join(strings.Fields(strings.Join(scope, " ")), " ")
}

// Exchange sends one token request over mTLS, authenticated with the
// source's current X509-SVID.
//
// A refusal by the server is returned as a protocol.Error, so
// errors.Is(err, protocol.ErrInvalidGrant) and errors.As work; any other
// failure (no SVID, network, TLS, a malformed response) is a wrapped error.
func (c *Client) Exchange(ctx context.Context, req Request) (*Token, error) {
	if c.closed.Load() {
		return nil, errClosed
	}
	if c.sidecar != nil {
		// No client_id: the STS takes it from the sidecar's certificate.
		return c.exchangeWith(ctx, c.sts.Load().sts, spiffeid.ID{}, req)
	}
	svid, err := c.source.GetX509SVID()
	if err != nil {
		return nil, fmt.Errorf("exchangeclient: no X509-SVID: %w", err)
	}
	sts, err := c.stsFor(svid)
	if err != nil {
		return nil, err
	}
	return c.exchangeWith(ctx, sts, svid.ID, req)
}

// exchangeWith sends req over sts, whose connections authenticate as id,
// by HTTP or by the gRPC API. Tokens uses it with an stsConn that
// presents one particular SVID.
func (c *Client) exchangeWith(ctx context.Context, sts *stsConn, id spiffeid.ID, req Request) (*Token, error) {
	if c.closed.Load() {
		return nil, errClosed
	}
	params, err := req.params(id)
	if err != nil {
		return nil, err
	}
	tok, err := c.send(ctx, sts, params, &req)
	c.metrics.exchange(params.grantType, err)
	return tok, err
}

// send sends params over sts, by HTTP or by the gRPC API, and sends it
// again while the STS is briefly away (transient: restarted, draining,
// or answering 503 temporarily_unavailable). It retries with a growing,
// jittered delay (retryBackoff) until ctx's deadline or, when ctx has
// none, for the client's timeout, and returns the last error when that
// budget is spent. Re-sending is safe: a token request changes no state
// on the server beyond its audit record, and a request the server never
// answered issued no token the caller saw. A temporarily_unavailable
// answer (HTTP 503 or 429, gRPC Unavailable or ResourceExhausted) is sent
// again no sooner than the Retry-After the server asked for, and is
// returned at once when that is past the budget. Refusals and other
// failures are returned at once.
func (c *Client) send(ctx context.Context, sts *stsConn, params wireRequest, req *Request) (*Token, error) {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(c.timeout)
	}
	var backoff retryBackoff
	var last error // the last transient failure
	for {
		tok, err := c.sendOnce(ctx, sts, params, req)
		if err != nil && last != nil && ctx.Err() != nil {
			// The deadline cut a retry short: what kept failing is the
			// better answer.
			return nil, last
		}
		if err == nil || !transient(err) {
			return tok, err
		}
		last = err
		// Sooner than the server asked is futile: a caller over its rate
		// limit is refused until its bucket has a token, and a server
		// that cannot judge requests says when it expects to.
		delay := max(backoff.next(), retryAfterOf(err))
		if time.Now().Add(delay).After(deadline) {
			return nil, err
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, err
		case <-t.C:
		}
	}
}

// sendOnce sends params over sts once, by HTTP or by the gRPC API.
func (c *Client) sendOnce(ctx context.Context, sts *stsConn, params wireRequest, req *Request) (*Token, error) {
	if sts.api != nil {
		return c.exchangeGRPC(ctx, sts.api, &params, req.Scope)
	}
	httpReq, err := http.NewRequestWithContext(ctx, http.MethodPost, c.tokenURL, strings.NewReader(encodeForm(&params)))
	if err != nil {
		return nil, fmt.Errorf("exchangeclient: token request: %w", err)
	}
	httpReq.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	httpReq.Header.Set("Accept", "application/json")

	sent := c.clock.Now()
	resp, err := sts.http.Do(httpReq)
	if err != nil {
		return nil, fmt.Errorf("exchangeclient: token request: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return nil, fmt.Errorf("exchangeclient: reading the token response: %w", err)
	}
	if len(body) > maxResponseBytes {
		return nil, fmt.Errorf("exchangeclient: the token response exceeds %d bytes", maxResponseBytes)
	}
	if resp.StatusCode == http.StatusServiceUnavailable {
		return nil, unavailableError{errorResponse(resp, body)}
	}
	if resp.StatusCode != http.StatusOK {
		return nil, errorResponse(resp, body)
	}
	return parseTokenResponse(body, sent, req.Scope)
}

// errorResponse returns the RFC 6749 §5.2 error in body as a
// protocol.Error, or an error describing an unexpected response.
func errorResponse(resp *http.Response, body []byte) error {
	var oauthErr protocol.Error
	if json.Unmarshal(body, &oauthErr) == nil && oauthErr.Code != "" {
		if oauthErr.Code == protocol.ErrTemporarilyUnavailable.Code {
			oauthErr.RetryAfter = retryAfter(resp.Header.Get("Retry-After"))
			oauthErr.RateLimited = resp.StatusCode == http.StatusTooManyRequests
		}
		return oauthErr
	}
	return fmt.Errorf("exchangeclient: token endpoint answered %s without an OAuth error", resp.Status)
}

// retryAfterOf is the Retry-After of a temporarily_unavailable err
// (RFC 6749 §4.1.2.1, RFC 9110 §10.2.3): how long the server asked the
// client to wait before sending again; zero when it asked nothing.
func retryAfterOf(err error) time.Duration {
	if perr, ok := errors.AsType[protocol.Error](err); ok && perr.Code == protocol.ErrTemporarilyUnavailable.Code {
		return perr.RetryAfter
	}
	return 0
}

// maxRetryAfter bounds the Retry-After the client believes.
const maxRetryAfter = time.Hour

// retryAfter reads a Retry-After field value in seconds (RFC 9110
// §10.2.3; this server sends no HTTP-date): zero when absent or
// malformed, at most maxRetryAfter.
func retryAfter(v string) time.Duration {
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0
	}
	return min(time.Duration(n)*time.Second, maxRetryAfter)
}

// maxExpiresIn keeps now + expires_in within time.Duration.
const maxExpiresIn = math.MaxInt64 / int64(time.Second)

// parseTokenResponse decodes and validates a success response.
func parseTokenResponse(body []byte, sent time.Time, requestedScope []string) (*Token, error) {
	var r protocol.Response
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("exchangeclient: malformed token response: %w", err)
	}
	return checkTokenResponse(&r, sent, requestedScope)
}

// checkTokenResponse validates a success response, from HTTP or gRPC.
func checkTokenResponse(r *protocol.Response, sent time.Time, requestedScope []string) (*Token, error) {
	switch {
	case r.AccessToken == "":
		return nil, errors.New("exchangeclient: the token response has no access_token")
	case r.ExpiresIn <= 0 || r.ExpiresIn > maxExpiresIn:
		return nil, fmt.Errorf("exchangeclient: the token response has expires_in %d, want a positive number of seconds", r.ExpiresIn)
	case !strings.EqualFold(r.TokenType, "bearer"):
		// RFC 6749 §7.1: the type is case-insensitive.
		return nil, fmt.Errorf("exchangeclient: the token response has token_type %q, want Bearer", r.TokenType)
	}
	tok := &Token{
		AccessToken:     r.AccessToken,
		IssuedTokenType: r.IssuedTokenType,
		TokenType:       r.TokenType,
		Expiry:          sent.Add(time.Duration(r.ExpiresIn) * time.Second),
		Scope:           strings.Fields(r.Scope),
	}
	if r.Scope == "" {
		// RFC 6749 §5.1: scope is omitted when it equals the request.
		tok.Scope = strings.Fields(joinScope(requestedScope))
	}
	return tok, nil
}

// Close releases idle connections (with WithGRPC, closes the gRPC
// connection) and closes the source New created; a source given with
// WithX509Source stays open. Exchange fails after Close.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.closed.Store(true)
		c.stsMu.Lock()
		if cur := c.sts.Load(); cur != nil {
			cur.sts.close()
		}
		c.stsMu.Unlock()
		if c.ownSource != nil {
			if err := c.ownSource.Close(); err != nil {
				c.closeErr = fmt.Errorf("exchangeclient: closing the X509 source: %w", err)
			}
		}
	})
	return c.closeErr
}
