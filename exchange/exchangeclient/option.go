package exchangeclient

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Option configures New. Only this package creates Options.
type Option interface {
	configureClient(*clientConfig)
}

type clientConfig struct {
	issuerURL    string
	source       X509Source
	sourceSet    bool
	workloadAddr string
	serverID     spiffeid.ID
	timeout      time.Duration
	grpc         bool
	clock        Clock
	metrics      prometheus.Registerer
	sidecar      string // WithSidecar's address
}

type optionFunc func(*clientConfig)

func (fn optionFunc) configureClient(c *clientConfig) { fn(c) }

// WithIssuerURL sets the STS issuer URL, for example
// https://sts.example.org:8443. It is required, and New checks it with the
// server's rule, protocol.CheckIssuerURL: https://host[:port], without a
// path or a trailing slash. The token endpoint is the issuer URL followed
// by protocol.PathToken ("/token").
func WithIssuerURL(url string) Option {
	return optionFunc(func(c *clientConfig) { c.issuerURL = url })
}

// WithX509Source makes the client present the SVIDs of src and verify the
// server with its bundles. The client does not close src.
func WithX509Source(src X509Source) Option {
	return optionFunc(func(c *clientConfig) { c.source, c.sourceSet = src, true })
}

// WithWorkloadAPIAddr sets the Workload API address used when no source is
// given with WithX509Source: New then creates a workloadapi.X509Source at
// addr, or at SPIFFE_ENDPOINT_SOCKET when addr is empty, and Close closes
// it. It is ignored when a source is given.
func WithWorkloadAPIAddr(addr string) Option {
	return optionFunc(func(c *clientConfig) { c.workloadAddr = addr })
}

// WithServerID authorizes exactly the server SPIFFE ID id. By default any
// SPIFFE ID in the client's own trust domain is authorized
// (tlsconfig.AuthorizeMemberOf).
func WithServerID(id spiffeid.ID) Option {
	return optionFunc(func(c *clientConfig) { c.serverID = id })
}

// WithTimeout bounds each token request, from dialing to reading the
// response; the default is 10 seconds. It must be positive.
func WithTimeout(d time.Duration) Option {
	return optionFunc(func(c *clientConfig) { c.timeout = d })
}

// WithGRPC makes the client send its token requests to the STS's gRPC API
// (exchangepb.TokenExchange, served on the same listener as the token
// endpoint) instead of the HTTP token endpoint. The requests, checks and
// refusals are the same: mTLS with the X509-SVID, and a protocol.Error
// for a refusal. The gRPC connection is made on the first request and
// closed by Close. Tokens presents the right certificate over gRPC as over
// HTTP: one connection per client certificate.
func WithGRPC() Option {
	return optionFunc(func(c *clientConfig) { c.grpc = true })
}

// WithClock makes the client and its Tokens read the time from clock:
// when tokens expire and when to refresh them, retry, poll the source and
// drop a certificate's token. The default, and what a nil clock means, is
// the system clock. It is meant for tests, with a fake clock.
func WithClock(clock Clock) Option {
	return optionFunc(func(c *clientConfig) { c.clock = clock })
}

// WithMetrics registers the client's counters on reg (never on the
// global registry); New returns the registry's error if they are already
// registered there, as by another Client: give each its own registry or a
// prometheus.WrapRegistererWith label. The counters are
//
//   - spiffe_sts_client_exchanges_total{grant,outcome}: token requests
//     sent, by grant (token_exchange, client_credentials) and outcome: ok,
//     the OAuth error code of a refusal (RFC 6749 §5.2), or
//     transport_error for any other failure after the request was made;
//   - spiffe_sts_client_refresh_failures_total: requests of Tokens that
//     ended without a token (see EventFailed);
//   - spiffe_sts_client_rebinds_total{outcome}: re-bindings to a rotated
//     X509-SVID (see EventRebound), by the same outcomes.
//
// Without WithMetrics nothing is counted or registered.
func WithMetrics(reg prometheus.Registerer) Option {
	return optionFunc(func(c *clientConfig) { c.metrics = reg })
}

// TokensOption configures Client.NewTokens. Only this package creates
// TokensOptions.
type TokensOption interface {
	configureTokens(*tokensConfig)
}

type tokensConfig struct {
	events       func(Event)
	subjectToken func(context.Context) (string, error)
}

type tokensOptionFunc func(*tokensConfig)

func (fn tokensOptionFunc) configureTokens(c *tokensConfig) { fn(c) }

// WithEvents makes Tokens report what it does to fn: every token obtained,
// refreshed or re-bound, every failed request and every certificate
// dropped. fn is called from Tokens' goroutines, possibly concurrently; it
// must not block or call Tokens.Close. Events never carry a token.
func WithEvents(fn func(Event)) TokensOption {
	return tokensOptionFunc(func(c *tokensConfig) { c.events = fn })
}

// WithSubjectTokenFunc makes Tokens call fn for a fresh subject token, in
// place of Request.SubjectToken, each time it uses the original grant. Use
// it with a JWT-SVID subject token: a JWT-SVID expires long before the
// workload stops needing tokens, and a refresh with an expired one fails.
// For example, with a workloadapi.JWTSource:
//
//	exchangeclient.WithSubjectTokenFunc(func(ctx context.Context) (string, error) {
//		svid, err := jwtSource.FetchJWTSVID(ctx, jwtsvid.Params{Audience: issuerURL})
//		if err != nil {
//			return "", err
//		}
//		return svid.Marshal(), nil
//	})
func WithSubjectTokenFunc(fn func(ctx context.Context) (string, error)) TokensOption {
	return tokensOptionFunc(func(c *tokensConfig) { c.subjectToken = fn })
}

// RoundTripperOption configures Tokens.RoundTripper. Only this package
// creates RoundTripperOptions.
type RoundTripperOption interface {
	configureRoundTripper(*roundTripperConfig)
}

type roundTripperConfig struct {
	base *http.Transport
}

type roundTripperOptionFunc func(*roundTripperConfig)

func (fn roundTripperOptionFunc) configureRoundTripper(c *roundTripperConfig) { fn(c) }

// WithBaseTransport makes the RoundTripper clone base for each client
// certificate, keeping everything but the TLS authentication (dialing,
// proxies, timeouts, connection limits, TLS versions). Its TLS client
// certificate and server verification are replaced. HTTP/2 is used only
// when base.ForceAttemptHTTP2 is set or base.Protocols enables it. The
// default is a clone of http.DefaultTransport with HTTP/2.
func WithBaseTransport(base *http.Transport) RoundTripperOption {
	return roundTripperOptionFunc(func(c *roundTripperConfig) { c.base = base })
}
