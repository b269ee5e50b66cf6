package forwarded

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"

	stsid "github.com/spiffe-sts/spiffe-sts/spiffeid"
)

// Header names of the forwarding formats.
const (
	// HeaderXFCC is Envoy's x-forwarded-client-cert.
	HeaderXFCC = "X-Forwarded-Client-Cert"
	// HeaderClientCert and HeaderClientCertChain are RFC 9440 §2.2, §2.3.
	HeaderClientCert      = "Client-Cert"
	HeaderClientCertChain = "Client-Cert-Chain"
)

// Defaults of Config.
const (
	DefaultMaxHeaderBytes = 16 << 10
	DefaultMaxChainLength = 5
)

// Errors of Policy.Client. They are wrapped with detail; match them with
// errors.Is and describe them to clients with Describe.
var (
	ErrUntrustedHop         = errors.New("forwarded: a forwarded client certificate from a hop that is not a trusted proxy")
	ErrNotForwarded         = errors.New("forwarded: the trusted proxy forwarded no client certificate")
	ErrOtherFormat          = errors.New("forwarded: a forwarding header of a format this deployment does not accept")
	ErrDuplicate            = errors.New("forwarded: forwarding header sent more than once")
	ErrTooLarge             = errors.New("forwarded: forwarding header too large")
	ErrMalformed            = errors.New("forwarded: malformed forwarding header")
	ErrNoCertificate        = errors.New("forwarded: the forwarded element carries no certificate")
	ErrMultipleCertificates = errors.New("forwarded: more than one client certificate forwarded")
	ErrChainTooLong         = errors.New("forwarded: forwarded certificate chain too long")
	ErrBy                   = errors.New("forwarded: the element's By is not the proxy's SPIFFE ID")
	ErrInvalidSVID          = errors.New("forwarded: the forwarded certificate is not a valid X509-SVID")
	ErrNoClientCertificate  = errors.New("forwarded: the request has no client certificate")
)

// Format is how a deployment's proxies forward the client certificate. It
// is a comparable value type; the zero Format is unset. Create one with
// ParseFormat or RequireFormat, or use the constants.
type Format string

// The formats.
const (
	// FormatXFCC is Envoy's x-forwarded-client-cert: Cert= and Chain= of
	// the last element.
	FormatXFCC Format = "xfcc"
	// FormatClientCert is RFC 9440 Client-Cert with optional
	// Client-Cert-Chain.
	FormatClientCert Format = "client-cert"
)

// ParseFormat parses "xfcc" or "client-cert".
func ParseFormat(s string) (Format, error) {
	switch f := Format(s); f {
	case FormatXFCC, FormatClientCert:
		return f, nil
	}
	return "", fmt.Errorf("forwarded: unknown format %q (want %q or %q)", s, FormatXFCC, FormatClientCert)
}

// RequireFormat is like ParseFormat but panics on error. Use it only for
// literals in code and tests.
func RequireFormat(s string) Format {
	f, err := ParseFormat(s)
	if err != nil {
		panic(err)
	}
	return f
}

// String returns f as ParseFormat reads it.
func (f Format) String() string { return string(f) }

// IsZero reports whether f is unset.
func (f Format) IsZero() bool { return f == "" }

// MarshalText implements encoding.TextMarshaler.
func (f Format) MarshalText() ([]byte, error) { return []byte(f), nil }

// Config is a deployment's trusted-proxy policy.
type Config struct {
	// Format is the one forwarding format accepted; a header of the other
	// format is refused. Required.
	Format Format
	// TrustedProxies match the SPIFFE IDs of the mTLS hops allowed to
	// forward a client certificate.
	TrustedProxies []stsid.Pattern
	// TrustUnixSocket trusts every hop that reaches a Unix socket
	// listener, for a sidecar in the same pod: the socket's file
	// permissions are then the only authentication of the proxy.
	TrustUnixSocket bool
	// Bundles verify the forwarded certificate as an X509-SVID, exactly as
	// a direct peer's: its trust domain must be among them. Required.
	Bundles x509bundle.Source
	// MaxHeaderBytes bounds each forwarding header line (and, for
	// Client-Cert-Chain, their sum): DefaultMaxHeaderBytes when zero.
	MaxHeaderBytes int
	// MaxChainLength bounds the forwarded chain, leaf included:
	// DefaultMaxChainLength when zero.
	MaxChainLength int
	// XFCCRequireBy requires the By key of the last XFCC element to be the
	// SPIFFE ID of the hop, which catches a proxy configured to forward a
	// client's header without appending its own element (Envoy's
	// FORWARD_ONLY and ALWAYS_FORWARD_ONLY). It needs the proxy to present
	// the same SVID on both sides, and is ignored for Unix-socket hops.
	XFCCRequireBy bool
}

// Policy decides whose certificate a request carries. It is safe for
// concurrent use.
type Policy struct {
	cfg Config
}

// New validates cfg, fills in defaults and returns the policy.
func New(cfg Config) (*Policy, error) {
	switch {
	case cfg.Format != FormatXFCC && cfg.Format != FormatClientCert:
		return nil, fmt.Errorf("forwarded: unknown format %q", cfg.Format)
	case cfg.Bundles == nil:
		return nil, errors.New("forwarded: no bundles")
	case len(cfg.TrustedProxies) == 0 && !cfg.TrustUnixSocket:
		return nil, errors.New("forwarded: no trusted proxies")
	case cfg.MaxHeaderBytes < 0 || cfg.MaxChainLength < 0:
		return nil, errors.New("forwarded: negative limit")
	}
	for _, p := range cfg.TrustedProxies {
		if p.IsZero() {
			return nil, errors.New("forwarded: empty trusted proxy pattern")
		}
	}
	cfg.TrustedProxies = append([]stsid.Pattern(nil), cfg.TrustedProxies...)
	if cfg.MaxHeaderBytes == 0 {
		cfg.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if cfg.MaxChainLength == 0 {
		cfg.MaxChainLength = DefaultMaxChainLength
	}
	return &Policy{cfg: cfg}, nil
}

// Hop is the immediate sender of a request.
type Hop struct {
	// Peer is the hop's authenticated mTLS identity; zero when it
	// presented no certificate.
	Peer stsid.Peer
	// UnixSocket reports that the request arrived on a Unix socket
	// listener.
	UnixSocket bool
}

// HopFromRequest returns the hop of a request served by net/http: the
// SPIFFE ID of r.TLS's peer certificate (stsid.PeerFromTLS, so the TLS
// configuration must have verified the chain; servers that only request
// client certificates build the Hop from stsid.VerifyPeer instead), and
// whether the listener is a Unix socket (http.LocalAddrContextKey).
func HopFromRequest(r *http.Request) Hop {
	var hop Hop
	if p, err := stsid.PeerFromTLS(r.TLS); err == nil {
		hop.Peer = p
	}
	if addr, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok && addr.Network() == "unix" {
		hop.UnixSocket = true
	}
	return hop
}

// Result is whose certificate a request carries.
type Result struct {
	// Client is the identity to serve and bind tokens to: the forwarded
	// certificate's when Forwarded, else the hop's own.
	Client stsid.Peer
	// Proxy is the trusted hop that forwarded Client; zero unless
	// Forwarded, and zero ID for a Unix-socket hop.
	Proxy stsid.Peer
	// Forwarded reports that Client came from a forwarding header.
	Forwarded bool
}

// Client returns the client of a request with headers h that arrived from
// hop:
//
//   - from a trusted proxy (a TrustedProxies match, or a Unix socket with
//     TrustUnixSocket), the certificate in the configured header, verified
//     against the bundles with stsid.VerifyPeer; a trusted proxy that
//     forwarded none is ErrNotForwarded, never served as itself;
//   - from any other hop, the hop itself, unless the request carries a
//     forwarding header of either format: ErrUntrustedHop.
//
// Headers are refused when repeated or spelled in several ways that
// canonicalize alike (ErrDuplicate), larger than MaxHeaderBytes
// (ErrTooLarge), or of the format not configured (ErrOtherFormat).
func (p *Policy) Client(hop Hop, h http.Header) (Result, error) {
	xfcc, err := p.lookup(h, HeaderXFCC, false)
	if err != nil {
		return Result{}, err
	}
	cc, err := p.lookup(h, HeaderClientCert, false)
	if err != nil {
		return Result{}, err
	}
	chain, err := p.lookup(h, HeaderClientCertChain, true)
	if err != nil {
		return Result{}, err
	}
	present := xfcc != nil || cc != nil || chain != nil
	if !p.trusted(hop) {
		if present {
			return Result{}, fmt.Errorf("%w: hop %s", ErrUntrustedHop, describeHop(hop))
		}
		if hop.Peer.ID.IsZero() || hop.Peer.Leaf == nil {
			return Result{}, ErrNoClientCertificate
		}
		return Result{Client: hop.Peer}, nil
	}

	var parsed []*x509.Certificate
	switch p.cfg.Format {
	case FormatXFCC:
		if cc != nil || chain != nil {
			return Result{}, fmt.Errorf("%w: %s from an %s deployment", ErrOtherFormat, HeaderClientCert, FormatXFCC)
		}
		if xfcc == nil {
			return Result{}, fmt.Errorf("%w: no %s from %s", ErrNotForwarded, HeaderXFCC, describeHop(hop))
		}
		parsed, err = p.fromXFCC(hop, xfcc[0])
	case FormatClientCert:
		if xfcc != nil {
			return Result{}, fmt.Errorf("%w: %s in a %s deployment", ErrOtherFormat, HeaderXFCC, FormatClientCert)
		}
		if cc == nil {
			if chain != nil {
				return Result{}, fmt.Errorf("%w: %s without %s", ErrMalformed, HeaderClientCertChain, HeaderClientCert)
			}
			return Result{}, fmt.Errorf("%w: no %s from %s", ErrNotForwarded, HeaderClientCert, describeHop(hop))
		}
		parsed, err = ParseClientCert(cc[0], chain, p.cfg.MaxChainLength)
	}
	if err != nil {
		return Result{}, err
	}
	client, err := stsid.VerifyPeer(parsed, p.cfg.Bundles)
	if err != nil {
		return Result{}, fmt.Errorf("%w: %w", ErrInvalidSVID, err)
	}
	return Result{Client: client, Proxy: hop.Peer, Forwarded: true}, nil
}

func (p *Policy) fromXFCC(hop Hop, value string) ([]*x509.Certificate, error) {
	elements, err := ParseXFCC(value)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	// The immediate proxy appends its element at the end; earlier ones
	// are hearsay of hops we have no relation with.
	last := elements[len(elements)-1]
	if p.cfg.XFCCRequireBy && !hop.Peer.ID.IsZero() {
		by := last.Values("By")
		if len(by) != 1 || by[0] != hop.Peer.ID.String() {
			return nil, fmt.Errorf("%w: proxy %s", ErrBy, hop.Peer.ID)
		}
	}
	return certsFromXFCC(last, p.cfg.MaxChainLength)
}

func (p *Policy) trusted(hop Hop) bool {
	if hop.UnixSocket && p.cfg.TrustUnixSocket {
		return true
	}
	if hop.Peer.ID.IsZero() {
		return false
	}
	for _, pat := range p.cfg.TrustedProxies {
		if pat.Match(hop.Peer.ID) {
			return true
		}
	}
	return false
}

func describeHop(hop Hop) string {
	switch {
	case !hop.Peer.ID.IsZero():
		return hop.Peer.ID.String()
	case hop.UnixSocket:
		return "on a Unix socket"
	default:
		return "without a client certificate"
	}
}

// lookup returns the values of the header name in h, or nil when absent.
// Every key of h that names the same header is considered: Go
// canonicalizes the names it parses, but a Header built by other code
// may hold "x-forwarded-client-cert" beside "X-Forwarded-Client-Cert",
// and some servers read '_' as '-'. Several such keys, or several values
// when !multi, are ErrDuplicate.
func (p *Policy) lookup(h http.Header, name string, multi bool) ([]string, error) {
	var values []string
	keys := 0
	for k, vs := range h {
		if !strings.EqualFold(k, name) && !strings.EqualFold(strings.ReplaceAll(k, "_", "-"), name) {
			continue
		}
		keys++
		values = append(values, vs...)
	}
	switch {
	case keys == 0:
		return nil, nil
	case keys > 1:
		return nil, fmt.Errorf("%w: %s under %d spellings", ErrDuplicate, name, keys)
	case len(values) == 0:
		return nil, fmt.Errorf("%w: %s without a value", ErrMalformed, name)
	case len(values) > 1 && !multi:
		return nil, fmt.Errorf("%w: %s %d times", ErrDuplicate, name, len(values))
	}
	total := 0
	for _, v := range values {
		if len(v) > p.cfg.MaxHeaderBytes {
			return nil, fmt.Errorf("%w: %s of %d bytes (at most %d)", ErrTooLarge, name, len(v), p.cfg.MaxHeaderBytes)
		}
		total += len(v)
	}
	if total > p.cfg.MaxHeaderBytes {
		return nil, fmt.Errorf("%w: %s lines of %d bytes in all (at most %d)", ErrTooLarge, name, total, p.cfg.MaxHeaderBytes)
	}
	return values, nil
}

// Describe returns a fixed, client-safe description of an error of
// Policy.Client, for an RFC 6749 §5.2 or RFC 6750 §3 error_description;
// the detail of err belongs in the log.
func Describe(err error) string {
	switch {
	case errors.Is(err, ErrUntrustedHop):
		return "a forwarded client certificate is accepted only from a trusted proxy"
	case errors.Is(err, ErrNotForwarded):
		return "the proxy forwarded no client certificate"
	case errors.Is(err, ErrNoClientCertificate):
		return "no client certificate"
	case errors.Is(err, ErrInvalidSVID):
		return "the forwarded client certificate is not a valid X509-SVID"
	default:
		return "the forwarded client certificate header is invalid"
	}
}
