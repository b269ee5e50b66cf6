package exchange

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/exchange/exchangepb"
	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
	"github.com/spiffe-sts/spiffe-sts/internal/ratelimit"
	stsid "github.com/spiffe-sts/spiffe-sts/spiffeid"
	"github.com/spiffe-sts/spiffe-sts/spiffeid/forwarded"
)

const (
	defaultMaxBodyBytes  = 64 << 10
	defaultTokenLifetime = 5 * time.Minute
	// DefaultJWKSMaxAge is the Cache-Control max-age of the JWKS and
	// metadata documents when Config.JWKSMaxAge is zero.
	DefaultJWKSMaxAge = 5 * time.Minute
	// DefaultMaxBundleAge is Config.MaxBundleAge when zero.
	DefaultMaxBundleAge = 5 * time.Minute
)

// Minter signs access tokens. *issuer.Issuer implements it.
type Minter interface {
	// Mint completes claims (iss, iat, nbf, exp, jti, cnf) and signs them.
	// exp is the earliest of now+ttl, claims.Expiry when set, and
	// leaf.NotAfter; claims hold the final values on return.
	Mint(ctx context.Context, claims *accesstoken.Claims, leaf *x509.Certificate, ttl time.Duration) (string, error)
}

// ExternalIssuer verifies subject tokens from one trusted issuer outside
// SPIFFE, such as an OIDC provider for end users or the Kubernetes service
// account issuer.
type ExternalIssuer interface {
	// Name is the issuer's name in policy (spiffeid.Delegation.Issuers).
	Name() string
	// Issuer is the "iss" value of its tokens.
	Issuer() string
	// Verify checks raw's signature, iss, aud, exp and nbf and returns its
	// claims: at least Subject, Expiry, and Scope, Actor and MayAct when
	// the token carries them.
	Verify(ctx context.Context, raw string) (*accesstoken.Claims, error)
}

// PublicKeys are the issuer's verification keys: they verify access tokens
// presented as subject or actor tokens and are published as the JWKS. The
// Server reads them at each use, so keys that rotate (*issuer.KeySet over
// a key ring) are served as they are now; MarshalJSON should be cheap.
type PublicKeys interface {
	accesstoken.KeySet
	json.Marshaler
}

// Readier is implemented by a Minter that can be unable to sign, such as
// *issuer.Issuer over a key ring without an active key; Server.Ready
// includes it.
type Readier interface {
	Ready() error
}

// Config configures a Server. Sources are go-spiffe's, normally from the
// Workload API (workloadapi.X509Source, workloadapi.BundleSource).
type Config struct {
	// IssuerURL is the issuer identifier exactly as clients reach it
	// (RFC 8414 §2): https://host[:port], without a path (see
	// protocol.CheckIssuerURL).
	IssuerURL string
	// TrustDomain is this server's own trust domain.
	TrustDomain spiffeid.TrustDomain
	// FederatedTrustDomains may also call the server and present
	// JWT-SVIDs; their bundles must come through the bundle sources.
	FederatedTrustDomains []spiffeid.TrustDomain
	// SVIDs is this server's own X509-SVID.
	SVIDs x509svid.Source
	// X509Bundles verify client certificates.
	X509Bundles x509bundle.Source
	// JWTBundles verify JWT-SVID subject tokens.
	JWTBundles jwtbundle.Source
	// Policy decides what each caller may obtain.
	Policy *stsid.Policy
	// ExternalIssuers are trusted issuers of JWT subject tokens, matched
	// by the token's "iss".
	ExternalIssuers []ExternalIssuer
	// Minter signs the issued tokens.
	Minter Minter
	// Keys are the issuer's public keys.
	Keys PublicKeys
	// JWKSMaxAge is the Cache-Control max-age of the JWKS and of both
	// metadata documents (DefaultJWKSMaxAge when zero). A key ring's
	// publication window must be longer, so that a verifier that
	// refreshes only on expiry has a key before it signs.
	JWKSMaxAge time.Duration
	// MaxBodyBytes caps a token request body, and a gRPC request message;
	// 64 KiB when zero.
	MaxBodyBytes int64
	// Clock returns the current time; time.Now when nil.
	Clock func() time.Time
	// Logger receives security events and issued-token records; nothing
	// is logged when nil.
	Logger hclog.Logger
	// Metrics, when not nil, receives the token endpoint's measurements
	// (*metrics.Exchange).
	Metrics Recorder
	// Audit, when not nil, receives one record per token decision, issued
	// or refused, on every path (*audit.Log).
	Audit AuditSink
	// AuditRequired fails closed on a lost audit sink: a decision whose
	// record cannot be written is answered temporarily_unavailable, and
	// Ready fails while Audit's Check (when it has one) fails.
	AuditRequired bool
	// Bundles, when not nil, tells when the Workload API last confirmed the
	// bundle of each trust domain the server accepts (TrustDomain and
	// FederatedTrustDomains). Ready fails once one is older than
	// MaxBundleAge, and callers and JWT-SVIDs of a trust domain whose
	// bundle is older than BundleHardLimit are refused with
	// temporarily_unavailable (fail closed).
	Bundles BundleConfirmations
	// MaxBundleAge is DefaultMaxBundleAge when zero; BundleHardLimit is
	// three times MaxBundleAge when zero, and must not be shorter.
	MaxBundleAge, BundleHardLimit time.Duration
	// Forwarded, when not nil, puts the server behind trusted proxies
	// that terminate mTLS (package spiffeid/forwarded): a request whose
	// connection is a trusted proxy's is served as the client whose
	// certificate the proxy forwards, and its token bound to that
	// certificate; a forwarding header from any other hop, and a trusted
	// proxy that forwards none, are refused with invalid_client. Its
	// Bundles should be X509Bundles. Nil ignores forwarding headers.
	Forwarded *forwarded.Policy

	// DefaultRateLimit, when not nil, limits each caller whose policy
	// rule has no RateLimit, and each caller no rule matches: a token
	// bucket per caller SPIFFE ID, charged once per token, gRPC or
	// introspection request after client authentication. Over it the
	// caller gets temporarily_unavailable as HTTP 429 (gRPC
	// ResourceExhausted) with Retry-After. Nil limits only the callers of
	// rules with a RateLimit.
	DefaultRateLimit *stsid.RateLimit
	// MaxRateLimitKeys bounds the callers whose token buckets are kept
	// (ratelimit.DefaultMaxKeys when zero); idle buckets go first.
	MaxRateLimitKeys int
	// MaxInFlight caps the token, gRPC and introspection requests served
	// at once (DefaultMaxInFlight when zero), counted from when the
	// request has been read (a body that trickles in holds no slot); the
	// ones over it get
	// temporarily_unavailable, HTTP 503 (gRPC Unavailable) with
	// Retry-After: 1.
	MaxInFlight int
	// ReadHeaderTimeout, ReadTimeout, WriteTimeout and IdleTimeout are the
	// http.Server timeouts of HTTPServer; the Default constants when zero.
	// An HTTP/2 connection must send its preface within
	// ReadHeaderTimeout and its first request within IdleTimeout. The
	// gRPC API, on the same listener, has WriteTimeout for each call from
	// its headers to its end (sooner when the client's deadline is), and
	// IdleTimeout for a connection without calls
	// (keepalive.ServerParameters.MaxConnectionIdle); ReadTimeout does
	// not apply to it.
	ReadHeaderTimeout, ReadTimeout, WriteTimeout, IdleTimeout time.Duration
	// TLSMinVersion is the lowest TLS version HTTPServer accepts:
	// tls.VersionTLS12 (the default when zero) or tls.VersionTLS13.
	TLSMinVersion uint16
}

// Server is the token endpoint and its metadata, JWKS and health
// endpoints, as one http.Handler.
type Server struct {
	cfg        Config
	log        hclog.Logger
	policy     atomic.Pointer[stsid.Policy]
	trusted    []spiffeid.TrustDomain
	tokenURL   string
	accessTV   *accesstoken.Verifier
	subjects   map[protocol.TokenType]subjectVerifier
	external   map[string]ExternalIssuer // by "iss"
	svids      *svidCache
	metadata   []byte
	cacheCtl   string // Cache-Control of the JWKS and metadata
	mux        *http.ServeMux
	grpc       *grpc.Server
	bufferPool sync.Pool
	lastKID    atomic.Pointer[headerKID] // see issuedKeyID
	limits     *ratelimit.Limiter        // the callers' token buckets
	inFlight   atomic.Int64              // requests admitted (see admit)
}

// New validates cfg and returns a Server.
func New(cfg Config) (*Server, error) {
	if err := validateIssuerURL(cfg.IssuerURL); err != nil {
		return nil, err
	}
	switch {
	case cfg.TrustDomain.IsZero():
		return nil, errors.New("exchange: TrustDomain is required")
	case cfg.SVIDs == nil || cfg.X509Bundles == nil || cfg.JWTBundles == nil:
		return nil, errors.New("exchange: SVIDs, X509Bundles and JWTBundles are required")
	case cfg.Policy == nil:
		return nil, errors.New("exchange: Policy is required")
	case cfg.Minter == nil || cfg.Keys == nil:
		return nil, errors.New("exchange: Minter and Keys are required")
	case cfg.MaxBodyBytes < 0:
		return nil, errors.New("exchange: MaxBodyBytes must not be negative")
	case cfg.JWKSMaxAge < 0:
		return nil, errors.New("exchange: JWKSMaxAge must not be negative")
	case cfg.MaxBundleAge < 0 || cfg.BundleHardLimit < 0:
		return nil, errors.New("exchange: MaxBundleAge and BundleHardLimit must not be negative")
	case cfg.AuditRequired && cfg.Audit == nil:
		return nil, errors.New("exchange: AuditRequired needs an Audit sink")
	}
	if err := validateLimits(&cfg); err != nil {
		return nil, err
	}
	if cfg.MaxBundleAge == 0 {
		cfg.MaxBundleAge = DefaultMaxBundleAge
	}
	if cfg.BundleHardLimit == 0 {
		cfg.BundleHardLimit = 3 * cfg.MaxBundleAge
	}
	if cfg.BundleHardLimit < cfg.MaxBundleAge {
		return nil, errors.New("exchange: BundleHardLimit must not be shorter than MaxBundleAge")
	}
	if cfg.JWKSMaxAge == 0 {
		cfg.JWKSMaxAge = DefaultJWKSMaxAge
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = defaultMaxBodyBytes
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	s := &Server{
		cfg:      cfg,
		log:      cfg.Logger.Named("exchange"),
		trusted:  append([]spiffeid.TrustDomain{cfg.TrustDomain}, cfg.FederatedTrustDomains...),
		tokenURL: cfg.IssuerURL + protocol.PathToken,
		accessTV: accesstoken.NewVerifier(cfg.IssuerURL, cfg.Keys, &accesstoken.Config{Now: cfg.Clock}),
		svids:    newSVIDCache(svidCacheSize, cfg.Clock),
		cacheCtl: "public, max-age=" + strconv.FormatInt(int64(cfg.JWKSMaxAge/time.Second), 10),
		limits:   ratelimit.New(cfg.MaxRateLimitKeys, cfg.Clock),
	}
	s.policy.Store(cfg.Policy)
	s.bufferPool.New = func() any { return new(bytes.Buffer) }
	s.subjects = map[protocol.TokenType]subjectVerifier{
		protocol.TokenTypeJWT:         jwtVerifier{s},
		protocol.TokenTypeAccessToken: accessTokenVerifier{s},
	}
	s.external = make(map[string]ExternalIssuer, len(cfg.ExternalIssuers))
	for _, ext := range cfg.ExternalIssuers {
		if _, dup := s.external[ext.Issuer()]; dup || ext.Issuer() == "" {
			return nil, fmt.Errorf("exchange: external issuer %q: empty or duplicate issuer %q", ext.Name(), ext.Issuer())
		}
		s.external[ext.Issuer()] = ext
	}
	var err error
	if s.metadata, err = json.Marshal(s.metadataDocument()); err != nil {
		return nil, fmt.Errorf("exchange: metadata: %w", err)
	}
	// The JWKS is encoded at each request, from the keys as they are
	// then; this checks that the keys can be encoded at all.
	if _, err = cfg.Keys.MarshalJSON(); err != nil {
		return nil, fmt.Errorf("exchange: JWKS: %w", err)
	}
	s.mux = http.NewServeMux()
	s.mux.HandleFunc("POST "+protocol.PathToken, s.serveToken)
	s.mux.HandleFunc(protocol.PathToken, serveMethodNotAllowed)
	s.mux.HandleFunc("POST "+protocol.PathIntrospect, s.serveIntrospect)
	s.mux.HandleFunc(protocol.PathIntrospect, serveIntrospectMethodNotAllowed)
	s.mux.HandleFunc("GET "+protocol.PathJWKS, s.serveJWKS)
	s.mux.HandleFunc("GET "+protocol.PathOAuthMetadata, s.serveMetadata)
	s.mux.HandleFunc("GET "+protocol.PathOpenIDMetadata, s.serveMetadata)
	health := HealthHandler(s.Ready)
	s.mux.Handle("GET "+protocol.PathHealthz, health)
	s.mux.Handle("GET "+protocol.PathReadyz, health)
	s.grpc = grpc.NewServer(
		grpc.Creds(handedOffCredentials{}),
		grpc.MaxRecvMsgSize(int(min(cfg.MaxBodyBytes, math.MaxInt32))),
		grpc.MaxConcurrentStreams(maxConcurrentStreams),
		grpc.MaxHeaderListSize(maxHeaderListSize),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: cfg.IdleTimeout}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: keepaliveMinTime, PermitWithoutStream: true}),
		grpc.InTapHandle(s.callDeadline),
	)
	exchangepb.RegisterTokenExchangeServer(s.grpc, grpcService{s: s})
	return s, nil
}

// keepaliveMinTime is the gRPC API's keepalive.EnforcementPolicy.MinTime:
// a client may PING that often, with calls in progress or not, as
// golang.org/x/net/http2's server lets it, and as gRPC-Go's clients
// (their keepalive Time is 10 s at least) and Envoy do; more often, and
// the connection ends with GOAWAY ENHANCE_YOUR_CALM (too_many_pings).
// gRPC-Go's default, a PING every 5 minutes and none without calls,
// would end such clients' connections.
var keepaliveMinTime = 10 * time.Second

// SetPolicy replaces the policy; requests already past the policy check
// finish under the old one.
func (s *Server) SetPolicy(p *stsid.Policy) { s.policy.Store(p) }

// ServeHTTP implements http.Handler: the HTTP endpoints. HTTPServer
// serves the gRPC API, exchangepb.TokenExchange, on the connections whose
// first request is a gRPC call (HTTP/2 with a Content-Type of
// application/grpc, application/grpc+<codec> or application/grpc;...);
// ServeHTTP serves a gRPC call that comes later on another HTTP/2
// connection, as a proxy that multiplexes both APIs over one connection
// sends it, through grpc.Server.ServeHTTP, which costs more.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.ProtoMajor == 2 && isGRPCContentType(r.Header.Get("Content-Type")) {
		s.grpc.ServeHTTP(w, r)
		return
	}
	s.mux.ServeHTTP(w, r)
}

// TLSConfig returns the server side TLS configuration: the certificate is
// this server's current X509-SVID (so rotation needs no restart), and a
// client certificate is requested but verified by the Server, per
// connection, so that a missing or untrusted certificate gets an
// invalid_client response on /token rather than a failed handshake, and
// metadata and JWKS stay reachable without one.
func TLSConfig(svids x509svid.Source) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: tlsconfig.GetCertificate(svids),
		ClientAuth:     tls.RequestClientCert,
	}
}

// maxHeaderBytes is HTTPServer's MaxHeaderBytes; maxHeaderListSize is the
// HTTP/2 SETTINGS_MAX_HEADER_LIST_SIZE that golang.org/x/net/http2 derives
// from it (RFC 9113 §6.5.2: 32 bytes more per field, for ten fields),
// which the gRPC API advertises too.
const (
	maxHeaderBytes    = 16 << 10
	maxHeaderListSize = maxHeaderBytes + 10*32
)

// HTTPServer returns an http.Server that serves s over TLS with this
// server's rotating X509-SVID (see TLSConfig), from Config.TLSMinVersion
// up, with the Config's timeouts: HTTP/1.1 and HTTP/2 (ALPN h2 and
// http/1.1), and the gRPC API over HTTP/2, on the same listener. Serve it
// with ServeTLS(listener, "", "").
//
// An HTTP/2 connection whose first request is a gRPC call is served by
// gRPC-Go's own HTTP/2 transport, any other by golang.org/x/net/http2's
// server with s as its handler. A gRPC client may send a keepalive PING
// every 10 seconds, with calls in progress or without
// (keepalive.EnforcementPolicy; more often, it gets GOAWAY
// too_many_pings). Shutdown stops the gRPC API gracefully too: from then
// on, s serves gRPC calls on no http.Server.
func (s *Server) HTTPServer(svids x509svid.Source) *http.Server {
	tlsConfig := TLSConfig(svids)
	tlsConfig.MinVersion = s.cfg.TLSMinVersion
	srv := &http.Server{
		Handler:           s,
		TLSConfig:         tlsConfig,
		ConnContext:       s.ConnContext,
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		ReadTimeout:       s.cfg.ReadTimeout,
		WriteTimeout:      s.cfg.WriteTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          s.log.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
	}
	// ConfigureServer offers h2 and http/1.1 by ALPN and has srv.Shutdown
	// send the HTTP/2 connections a GOAWAY; it fails only on a
	// TLSConfig.CipherSuites without the HTTP/2 ones, which TLSConfig
	// does not set.
	//lint:ignore SA1019 see http2.go: serveHTTP2Conn needs x/net's ServeConn.
	h2 := &http2.Server{}
	//lint:ignore SA1019 as above.
	if err := http2.ConfigureServer(srv, h2); err != nil {
		panic("exchange: " + err.Error())
	}
	// stopped ends the HTTP/2 connections not yet handed on (see
	// serveHTTP2Conn).
	stopped, stop := context.WithCancel(context.Background())
	srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){
		http2.NextProtoTLS: func(hs *http.Server, c *tls.Conn, h http.Handler) { s.serveHTTP2Conn(stopped, hs, h2, c, h) },
	}
	// Shutdown hooks must not block; GracefulStop returns once the gRPC
	// calls in progress have ended (Close ends them sooner, by closing
	// their connections).
	srv.RegisterOnShutdown(stop)
	srv.RegisterOnShutdown(func() { go s.grpc.GracefulStop() })
	return srv
}

// ConnContext is the http.Server hook that lets the Server authenticate a
// client certificate once per connection instead of once per request.
func (s *Server) ConnContext(ctx context.Context, _ net.Conn) context.Context {
	return context.WithValue(ctx, connAuthKey{}, new(connAuth))
}

type connAuthKey struct{}

// connAuthFrom returns the connection's cache that ConnContext put in ctx,
// or a new one, which caches nothing beyond the request, when there is
// none.
func connAuthFrom(ctx context.Context) *connAuth {
	if auth, ok := ctx.Value(connAuthKey{}).(*connAuth); ok {
		return auth
	}
	return new(connAuth)
}

// connAuth caches the outcome of verifying a connection's client chain
// and, behind a trusted proxy, of the certificates it forwarded.
type connAuth struct {
	once sync.Once
	peer stsid.Peer
	err  error

	mu        sync.Mutex
	forwarded map[string]forwardedResult // by forwardingKey
}

// forwardedResult is the outcome of forwarded.Policy.Client for one set
// of forwarding headers.
type forwardedResult struct {
	res forwarded.Result
	err error
}

// maxForwardedPerConn bounds the forwarded results a connection keeps: a
// proxy multiplexes many clients over one connection.
const maxForwardedPerConn = 64

// Ready reports whether the server can issue tokens; the error joins one
// line per failing condition (errors.Join):
//
//   - a signing key, when the Minter is a Readier (a key ring whose store
//     is unreachable stays ready: it signs with its in-memory key);
//   - its own X509-SVID, unexpired;
//   - the X.509 and JWT bundles of its trust domain;
//   - with Config.Bundles, the bundle of every accepted trust domain
//     confirmed by the Workload API within MaxBundleAge;
//   - with AuditRequired, an audit sink that works (its Check, when it has
//     one).
func (s *Server) Ready() error {
	var errs []error
	if r, ok := s.cfg.Minter.(Readier); ok {
		if err := r.Ready(); err != nil {
			errs = append(errs, fmt.Errorf("no signing key: %w", err))
		}
	}
	if svid, err := s.cfg.SVIDs.GetX509SVID(); err != nil {
		errs = append(errs, fmt.Errorf("no X509-SVID: %w", err))
	} else if leaf := svid.Certificates[0]; !s.cfg.Clock().Before(leaf.NotAfter) {
		errs = append(errs, fmt.Errorf("own X509-SVID expired at %s", leaf.NotAfter.UTC().Format(time.RFC3339)))
	}
	if _, err := s.cfg.X509Bundles.GetX509BundleForTrustDomain(s.cfg.TrustDomain); err != nil {
		errs = append(errs, fmt.Errorf("no X.509 bundle: %w", err))
	}
	if _, err := s.cfg.JWTBundles.GetJWTBundleForTrustDomain(s.cfg.TrustDomain); err != nil {
		errs = append(errs, fmt.Errorf("no JWT bundle: %w", err))
	}
	if s.cfg.Bundles != nil {
		for _, td := range s.trusted {
			if err := s.bundleAge(td); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if c, ok := s.cfg.Audit.(interface{ Check() error }); ok && s.cfg.AuditRequired {
		if err := c.Check(); err != nil {
			errs = append(errs, fmt.Errorf("audit sink (required) failing: %w", err))
		}
	}
	return errors.Join(errs...)
}

// authenticate returns the caller authenticated by the X509-SVID of its
// connection, whose TLS state is state (nil without TLS), for both the HTTP
// and the gRPC API (RFC 8705 §2.1 tls_client_auth, with the SPIFFE ID in
// the SAN URI as the client identifier). The chain is verified once per
// connection, whose cache is auth (see connAuthFrom); the expiry of the
// leaf is checked on every request.
//
// With Config.Forwarded, h are the request's headers (or gRPC metadata):
// from a trusted proxy the caller is the client whose certificate it
// forwarded, verified once per connection and header value, and proxy is
// the proxy; a forwarding header from any other hop, or none from a
// trusted proxy, is invalid_client with forwarded.Describe's text.
func (s *Server) authenticate(auth *connAuth, state *tls.ConnectionState, h http.Header) (caller, proxy stsid.Peer, err error) {
	hop, err := s.authenticateHop(auth, state)
	if s.cfg.Forwarded == nil {
		return hop, stsid.Peer{}, err
	}
	// A hop that failed authentication is no proxy: without a header it
	// gets its own error, with one the untrusted-hop refusal.
	res, ferr := s.forwardedClient(auth, forwarded.Hop{Peer: hop}, h)
	switch {
	case errors.Is(ferr, forwarded.ErrNoClientCertificate) && err != nil:
		return stsid.Peer{}, stsid.Peer{}, err
	case ferr != nil:
		s.log.Warn("forwarded client certificate refused", logKeySPIFFEID, hop.ID.String(), logKeyReason, ferr.Error())
		return stsid.Peer{}, stsid.Peer{}, withDetail(protocol.ErrInvalidClient.WithDescription("%s", forwarded.Describe(ferr)), ferr.Error())
	case err != nil:
		return stsid.Peer{}, stsid.Peer{}, err
	case !res.Forwarded:
		return hop, stsid.Peer{}, nil
	}
	client := res.Client
	if !slices.Contains(s.trusted, client.ID.TrustDomain()) {
		s.log.Warn("forwarded client from untrusted trust domain", logKeySPIFFEID, client.ID.String(), logKeyProxy, hop.ID.String())
		return stsid.Peer{}, stsid.Peer{}, protocol.ErrInvalidClient.WithDescription("trust domain %q is not trusted by this server", client.ID.TrustDomain().Name())
	}
	if !s.cfg.Clock().Before(client.Leaf.NotAfter) {
		return stsid.Peer{}, stsid.Peer{}, protocol.ErrInvalidClient.WithDescription("the forwarded client certificate has expired")
	}
	if err := s.checkFresh(client.ID.TrustDomain()); err != nil {
		return stsid.Peer{}, stsid.Peer{}, err
	}
	return client, hop, nil
}

// authenticateHop verifies the connection's own client certificate, once
// per connection (auth), and checks its expiry and bundle freshness.
func (s *Server) authenticateHop(auth *connAuth, state *tls.ConnectionState) (stsid.Peer, error) {
	if state == nil || len(state.PeerCertificates) == 0 {
		return stsid.Peer{}, protocol.ErrInvalidClient.WithDescription("a client certificate (X509-SVID) is required")
	}
	auth.once.Do(func() { auth.peer, auth.err = s.verifyClientChain(state.PeerCertificates) })
	if auth.err != nil {
		return stsid.Peer{}, auth.err
	}
	if !s.cfg.Clock().Before(auth.peer.Leaf.NotAfter) {
		return stsid.Peer{}, protocol.ErrInvalidClient.WithDescription("the client certificate has expired")
	}
	if err := s.checkFresh(auth.peer.ID.TrustDomain()); err != nil {
		return stsid.Peer{}, err
	}
	return auth.peer, nil
}

// forwardedClient applies Config.Forwarded to hop and h, remembering the
// outcome per connection by the forwarding headers' names and values (the
// hop is the same for the whole connection; expiry is checked by the
// caller on every request).
func (s *Server) forwardedClient(auth *connAuth, hop forwarded.Hop, h http.Header) (forwarded.Result, error) {
	if hop.Peer.ID.IsZero() {
		return s.cfg.Forwarded.Client(hop, h) // cheap: refused or no certificate
	}
	key := forwardingKey(h)
	auth.mu.Lock()
	r, ok := auth.forwarded[key]
	auth.mu.Unlock()
	if ok {
		return r.res, r.err
	}
	r.res, r.err = s.cfg.Forwarded.Client(hop, h)
	auth.mu.Lock()
	if auth.forwarded == nil || len(auth.forwarded) >= maxForwardedPerConn {
		auth.forwarded = make(map[string]forwardedResult)
	}
	auth.forwarded[key] = r
	auth.mu.Unlock()
	return r.res, r.err
}

// forwardingKey identifies exactly what forwarded.Policy.Client reads of
// h: every header whose name, with '_' read as '-', is one of the
// forwarding headers in any case, with its name and values.
func forwardingKey(h http.Header) string {
	var parts []string
	for k, vs := range h {
		n := strings.ReplaceAll(k, "_", "-")
		if !strings.EqualFold(n, forwarded.HeaderXFCC) && !strings.EqualFold(n, forwarded.HeaderClientCert) &&
			!strings.EqualFold(n, forwarded.HeaderClientCertChain) {
			continue
		}
		parts = append(parts, strconv.Quote(k)+":"+strconv.Quote(strings.Join(vs, "\x00")))
	}
	slices.Sort(parts)
	return strings.Join(parts, "\n")
}

func (s *Server) verifyClientChain(certs []*x509.Certificate) (stsid.Peer, error) {
	peer, err := stsid.VerifyPeer(certs, s.cfg.X509Bundles)
	if err != nil {
		s.log.Warn("client authentication failed", logKeyReason, err.Error())
		return stsid.Peer{}, withDetail(protocol.ErrInvalidClient.WithDescription("the client certificate is not a valid X509-SVID of a trusted trust domain"), err.Error())
	}
	if !slices.Contains(s.trusted, peer.ID.TrustDomain()) {
		s.log.Warn("client from untrusted trust domain", logKeySPIFFEID, peer.ID.String())
		return stsid.Peer{}, protocol.ErrInvalidClient.WithDescription("trust domain %q is not trusted by this server", peer.ID.TrustDomain().Name())
	}
	return peer, nil
}

// metadataDocument is the RFC 8414 §2 authorization server metadata.
func (s *Server) metadataDocument() map[string]any {
	introspectURL := s.cfg.IssuerURL + protocol.PathIntrospect
	return map[string]any{
		"issuer":                                s.cfg.IssuerURL,
		"token_endpoint":                        s.tokenURL,
		"jwks_uri":                              s.cfg.IssuerURL + protocol.PathJWKS,
		"grant_types_supported":                 []protocol.GrantType{protocol.GrantTypeTokenExchange, protocol.GrantTypeClientCredentials},
		"response_types_supported":              []string{},
		"token_endpoint_auth_methods_supported": []string{"tls_client_auth"},
		// RFC 8414 §2 and RFC 7662.
		"introspection_endpoint":                        introspectURL,
		"introspection_endpoint_auth_methods_supported": []string{"tls_client_auth"},
		// RFC 8705 §3.3 and §5.
		"tls_client_certificate_bound_access_tokens": true,
		"mtls_endpoint_aliases":                      map[string]string{"token_endpoint": s.tokenURL, "introspection_endpoint": introspectURL},
	}
}

// validateIssuerURL applies protocol.CheckIssuerURL, the one issuer URL
// rule (RFC 8414 §2, §3: no path).
func validateIssuerURL(raw string) error {
	if err := protocol.CheckIssuerURL(raw); err != nil {
		return fmt.Errorf("exchange: IssuerURL %q %w", raw, err)
	}
	return nil
}

func (s *Server) serveMetadata(w http.ResponseWriter, _ *http.Request) {
	writeRaw(w, s.metadata, s.cacheCtl)
}

// serveJWKS serves the current public keys (RFC 7517 §5); a key ring's
// changes show here as soon as the ring has refreshed.
func (s *Server) serveJWKS(w http.ResponseWriter, _ *http.Request) {
	doc, err := s.cfg.Keys.MarshalJSON()
	if err != nil {
		s.log.Error("cannot encode the JWKS", logKeyReason, err.Error())
		w.Header().Set("Cache-Control", "no-store")
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	writeRaw(w, doc, s.cacheCtl)
}

func writeRaw(w http.ResponseWriter, body []byte, cacheControl string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", cacheControl)
	_, _ = w.Write(body)
}

// HealthHandler serves protocol.PathHealthz, always 200 "ok", and
// protocol.PathReadyz, 200 "ready" when ready returns nil and 503
// otherwise, for kubelet probes; the 503 body is "not ready" and then
// each failing condition, one per line (the lines of the error's text).
// The Server serves it with Server.Ready; cmd/spiffe-sts serves the same
// handler on its plain-HTTP health listener.
func HealthHandler(ready func() error) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+protocol.PathHealthz, func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET "+protocol.PathReadyz, func(w http.ResponseWriter, _ *http.Request) {
		if err := ready(); err != nil {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("Cache-Control", "no-store")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("not ready\n" + strings.TrimRight(err.Error(), "\n") + "\n"))
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	return mux
}

func serveMethodNotAllowed(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Allow", http.MethodPost)
	writeJSON(w, http.StatusMethodNotAllowed, protocol.ErrInvalidRequest.WithDescription("the token endpoint accepts POST only"))
}
