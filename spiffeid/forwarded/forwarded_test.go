package forwarded_test

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spiffe-sts/spiffe-sts/internal/testca"
	stsid "github.com/spiffe-sts/spiffe-sts/spiffeid"
	"github.com/spiffe-sts/spiffe-sts/spiffeid/forwarded"
)

const (
	proxyID  = "spiffe://example.org/ns/edge/sa/envoy"
	clientID = "spiffe://example.org/ns/prod/sa/web"
	otherID  = "spiffe://example.org/ns/prod/sa/other"
)

// pemOf returns the PEM of certs.
func pemOf(certs ...*x509.Certificate) string {
	var b strings.Builder
	for _, c := range certs {
		_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.String()
}

// envoyEscape URL-encodes a PEM value as Envoy does: every byte but
// unreserved ones percent-encoded, a space as %20.
func envoyEscape(s string) string { return strings.ReplaceAll(url.QueryEscape(s), "+", "%20") }

func hashOf(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// sfBytes is an RFC 8941 Byte Sequence of der.
func sfBytes(der []byte) string { return ":" + base64.StdEncoding.EncodeToString(der) + ":" }

type fixture struct {
	ca, evil        *testca.CA
	proxy, stranger stsid.Peer
	client, other   *x509.Certificate
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ca := testca.New(t, "example.org")
	f := &fixture{ca: ca, evil: testca.New(t, "evil.example")}
	f.proxy = peerOf(ca.SVID(t, proxyID, time.Hour).Certificates[0])
	f.stranger = peerOf(ca.SVID(t, otherID, time.Hour).Certificates[0])
	f.client = ca.SVID(t, clientID, time.Hour).Certificates[0]
	f.other = ca.SVID(t, otherID, time.Hour).Certificates[0]
	return f
}

func peerOf(c *x509.Certificate) stsid.Peer {
	p, err := stsid.PeerFromTLS(&tls.ConnectionState{PeerCertificates: []*x509.Certificate{c}})
	if err != nil {
		panic(err)
	}
	return p
}

// element is the XFCC element the proxy appends for leaf, as Envoy writes
// it with set_current_client_cert_details cert, uri and subject.
func (f *fixture) element(leaf *x509.Certificate) forwarded.XFCCElement {
	return forwarded.XFCCElement{
		{Key: "By", Value: proxyID},
		{Key: "Hash", Value: hashOf(leaf)},
		{Key: "Cert", Value: envoyEscape(pemOf(leaf))},
		{Key: "Subject", Value: "CN=client,O=example"},
		{Key: "URI", Value: leaf.URIs[0].String()},
	}
}

func TestClientXFCC(t *testing.T) {
	f := newFixture(t)
	expired := f.ca.SVIDValid(t, clientID, time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour)).Certificates[0]
	evil := f.evil.SVID(t, "spiffe://evil.example/ns/prod/sa/web", time.Hour).Certificates[0]
	untrustedCA := testca.New(t, "example.org").SVID(t, clientID, time.Hour).Certificates[0]
	// An element the client wrote itself, which a proxy in APPEND_FORWARD
	// mode passes on before its own.
	forged := forwarded.XFCCElement{{Key: "By", Value: proxyID}, {Key: "Cert", Value: envoyEscape(pemOf(f.other))}, {Key: "Subject", Value: `x";URI=y,By=z`}}

	type params struct {
		hop    forwarded.Hop
		header http.Header
	}
	baseline := func() params {
		h := http.Header{}
		h.Set(forwarded.HeaderXFCC, forged.String()+","+f.element(f.client).String())
		return params{hop: forwarded.Hop{Peer: f.proxy}, header: h}
	}
	withLast := func(mutate func(el forwarded.XFCCElement) forwarded.XFCCElement) func(*params) {
		return func(p *params) {
			p.header.Set(forwarded.HeaderXFCC, mutate(f.element(f.client)).String())
		}
	}
	setKey := func(key, value string) func(*params) {
		return withLast(func(el forwarded.XFCCElement) forwarded.XFCCElement {
			for i := range el {
				if el[i].Key == key {
					el[i].Value = value
					return el
				}
			}
			return append(el, forwarded.XFCCPair{Key: key, Value: value})
		})
	}
	useCert := func(c *x509.Certificate) func(*params) {
		return func(p *params) { p.header.Set(forwarded.HeaderXFCC, f.element(c).String()) }
	}
	dropKey := func(key string) func(*params) {
		return withLast(func(el forwarded.XFCCElement) forwarded.XFCCElement {
			var out forwarded.XFCCElement
			for _, p := range el {
				if p.Key != key {
					out = append(out, p)
				}
			}
			return out
		})
	}
	tests := []struct {
		name           string
		overrideConfig func(*forwarded.Config)
		overrideParams func(*params)
		expectClient   string
		expectDirect   bool
		expectErr      error
		expectErrText  string
	}{
		{name: "baseline: the last element, from a trusted proxy", expectClient: clientID},
		{name: "a single element (SANITIZE_SET)", overrideParams: withLast(func(el forwarded.XFCCElement) forwarded.XFCCElement { return el }), expectClient: clientID},
		{name: "Cert quoted as Envoy writes it", overrideParams: func(p *params) {
			p.header.Set(forwarded.HeaderXFCC, `By=`+proxyID+`;Hash=`+hashOf(f.client)+`;Cert="`+envoyEscape(pemOf(f.client))+`";Subject="";URI=`+clientID)
		}, expectClient: clientID},
		{name: "Chain with the leaf and the CA", overrideParams: setKey("Chain", envoyEscape(pemOf(f.client, f.ca.Cert))), expectClient: clientID},
		{name: "Chain alone", overrideParams: func(p *params) {
			dropKey("Cert")(p)
			el, _ := forwarded.ParseXFCC(p.header.Get(forwarded.HeaderXFCC))
			p.header.Set(forwarded.HeaderXFCC, append(el[0], forwarded.XFCCPair{Key: "Chain", Value: envoyEscape(pemOf(f.client))}).String())
		}, expectClient: clientID},
		{name: "no Hash", overrideParams: dropKey("Hash"), expectClient: clientID},
		{name: "lower-case keys", overrideParams: func(p *params) {
			p.header.Set(forwarded.HeaderXFCC, "cert="+envoyEscape(pemOf(f.client)))
		}, expectClient: clientID},
		{name: "lower-case header name (HTTP/2)", overrideParams: func(p *params) {
			v := p.header.Get(forwarded.HeaderXFCC)
			p.header = http.Header{"x-forwarded-client-cert": {v}}
		}, expectClient: clientID},
		{name: "By checked", overrideConfig: func(c *forwarded.Config) { c.XFCCRequireBy = true }, expectClient: clientID},
		{name: "trusted Unix socket", overrideConfig: func(c *forwarded.Config) { c.TrustUnixSocket = true },
			overrideParams: func(p *params) { p.hop = forwarded.Hop{UnixSocket: true} }, expectClient: clientID},
		{name: "untrusted hop without a header is served as itself", overrideParams: func(p *params) {
			p.hop.Peer = f.stranger
			p.header = http.Header{}
		}, expectClient: otherID, expectDirect: true},

		// Who may forward.
		{name: "header from an untrusted hop", overrideParams: func(p *params) { p.hop.Peer = f.stranger },
			expectErr: forwarded.ErrUntrustedHop, expectErrText: "forwarded: a forwarded client certificate from a hop that is not a trusted proxy: hop " + otherID},
		{name: "header from a hop without a certificate", overrideParams: func(p *params) { p.hop = forwarded.Hop{} },
			expectErr: forwarded.ErrUntrustedHop, expectErrText: "forwarded: a forwarded client certificate from a hop that is not a trusted proxy: hop without a client certificate"},
		{name: "header on a Unix socket not opted into", overrideParams: func(p *params) { p.hop = forwarded.Hop{UnixSocket: true} },
			expectErr: forwarded.ErrUntrustedHop, expectErrText: "forwarded: a forwarded client certificate from a hop that is not a trusted proxy: hop on a Unix socket"},
		{name: "Client-Cert from an untrusted hop", overrideParams: func(p *params) {
			p.hop.Peer = f.stranger
			p.header = http.Header{forwarded.HeaderClientCert: {sfBytes(f.client.Raw)}}
		}, expectErr: forwarded.ErrUntrustedHop, expectErrText: "forwarded: a forwarded client certificate from a hop that is not a trusted proxy: hop " + otherID},
		{name: "underscore spelling from an untrusted hop", overrideParams: func(p *params) {
			p.hop.Peer = f.stranger
			p.header = http.Header{"X_forwarded_client_cert": {p.header.Get(forwarded.HeaderXFCC)}}
		}, expectErr: forwarded.ErrUntrustedHop, expectErrText: "forwarded: a forwarded client certificate from a hop that is not a trusted proxy: hop " + otherID},
		{name: "trusted proxy forwarded nothing", overrideParams: func(p *params) { p.header = http.Header{} },
			expectErr: forwarded.ErrNotForwarded, expectErrText: "forwarded: the trusted proxy forwarded no client certificate: no X-Forwarded-Client-Cert from " + proxyID},
		{name: "no hop certificate and no header", overrideParams: func(p *params) { p.hop = forwarded.Hop{}; p.header = http.Header{} },
			expectErr: forwarded.ErrNoClientCertificate, expectErrText: "forwarded: the request has no client certificate"},
		{name: "By of another proxy", overrideConfig: func(c *forwarded.Config) { c.XFCCRequireBy = true }, overrideParams: setKey("By", otherID),
			expectErr: forwarded.ErrBy, expectErrText: "forwarded: the element's By is not the proxy's SPIFFE ID: proxy " + proxyID},

		// Header smuggling.
		{name: "two header lines", overrideParams: func(p *params) { p.header.Add(forwarded.HeaderXFCC, f.element(f.other).String()) },
			expectErr: forwarded.ErrDuplicate, expectErrText: "forwarded: forwarding header sent more than once: X-Forwarded-Client-Cert 2 times"},
		{name: "two spellings of the name", overrideParams: func(p *params) { p.header["x-forwarded-client-cert"] = []string{f.element(f.other).String()} },
			expectErr: forwarded.ErrDuplicate, expectErrText: "forwarded: forwarding header sent more than once: X-Forwarded-Client-Cert under 2 spellings"},
		{name: "underscore spelling beside the name", overrideParams: func(p *params) { p.header["X_Forwarded_Client_Cert"] = []string{f.element(f.other).String()} },
			expectErr: forwarded.ErrDuplicate, expectErrText: "forwarded: forwarding header sent more than once: X-Forwarded-Client-Cert under 2 spellings"},
		{name: "the other format as well", overrideParams: func(p *params) { p.header.Set(forwarded.HeaderClientCert, sfBytes(f.other.Raw)) },
			expectErr: forwarded.ErrOtherFormat, expectErrText: "forwarded: a forwarding header of a format this deployment does not accept: Client-Cert from an xfcc deployment"},
		{name: "oversize", overrideParams: setKey("DNS", strings.Repeat("a", 16<<10)),
			expectErr: forwarded.ErrTooLarge},
		{name: "empty header", overrideParams: func(p *params) { p.header.Set(forwarded.HeaderXFCC, "") },
			expectErr: forwarded.ErrMalformed, expectErrText: "forwarded: malformed forwarding header: x-forwarded-client-cert syntax: element 1: empty element"},
		{name: "header without values", overrideParams: func(p *params) { p.header[forwarded.HeaderXFCC] = []string{} },
			expectErr: forwarded.ErrMalformed, expectErrText: "forwarded: malformed forwarding header: X-Forwarded-Client-Cert without a value"},

		// The element.
		{name: "a quote opened by the client swallows the proxy's element", overrideParams: func(p *params) {
			p.header.Set(forwarded.HeaderXFCC, `By=x;Subject="`+","+f.element(f.client).String())
		}, expectErr: forwarded.ErrMalformed, expectErrText: "forwarded: malformed forwarding header: x-forwarded-client-cert syntax: element 1: pair 2: unexpected 'C' after the value"},
		{name: "unterminated quote", overrideParams: setKey("Subject", "\x00"), expectErr: forwarded.ErrMalformed,
			expectErrText: "forwarded: malformed forwarding header: x-forwarded-client-cert syntax: element 1: pair 4: control byte 0x0 in a quoted value"},
		{name: "Hash only", overrideParams: dropKey("Cert"),
			expectErr: forwarded.ErrNoCertificate, expectErrText: "forwarded: the forwarded element carries no certificate: the element has no Cert or Chain"},
		{name: "Hash of another certificate", overrideParams: setKey("Hash", hashOf(f.other)),
			expectErr: forwarded.ErrMalformed, expectErrText: "forwarded: malformed forwarding header: Hash is not the SHA-256 of the certificate"},
		{name: "two certificates in Cert", overrideParams: setKey("Cert", envoyEscape(pemOf(f.client, f.other))),
			expectErr: forwarded.ErrMultipleCertificates, expectErrText: "forwarded: more than one client certificate forwarded: Cert holds more than one certificate"},
		{name: "two Cert keys", overrideParams: withLast(func(el forwarded.XFCCElement) forwarded.XFCCElement {
			return append(el, forwarded.XFCCPair{Key: "cert", Value: envoyEscape(pemOf(f.other))})
		}), expectErr: forwarded.ErrMultipleCertificates, expectErrText: "forwarded: more than one client certificate forwarded: the element has 2 Cert keys"},
		{name: "two By keys", overrideParams: withLast(func(el forwarded.XFCCElement) forwarded.XFCCElement {
			return append(el, forwarded.XFCCPair{Key: "By", Value: otherID})
		}), expectErr: forwarded.ErrMalformed, expectErrText: "forwarded: malformed forwarding header: the element repeats the By key"},
		{name: "Chain not starting with Cert", overrideParams: setKey("Chain", envoyEscape(pemOf(f.other, f.ca.Cert))),
			expectErr: forwarded.ErrMalformed, expectErrText: "forwarded: malformed forwarding header: the first certificate of Chain is not Cert"},
		{name: "Chain too long", overrideParams: setKey("Chain", envoyEscape(pemOf(f.client, f.ca.Cert, f.ca.Cert, f.ca.Cert, f.ca.Cert, f.ca.Cert))),
			expectErr: forwarded.ErrChainTooLong, expectErrText: "forwarded: forwarded certificate chain too long: Chain holds more than 5 certificates"},
		{name: "bad URL encoding", overrideParams: setKey("Cert", "%zz"),
			expectErr: forwarded.ErrMalformed, expectErrText: `forwarded: malformed forwarding header: Cert is not URL-encoded: invalid URL escape "%zz"`},
		{name: "not PEM", overrideParams: setKey("Cert", "MIIB"),
			expectErr: forwarded.ErrMalformed, expectErrText: "forwarded: malformed forwarding header: Cert holds data that is not a PEM certificate"},
		{name: "PEM followed by garbage", overrideParams: setKey("Cert", envoyEscape(pemOf(f.client)+"junk")),
			expectErr: forwarded.ErrMalformed, expectErrText: "forwarded: malformed forwarding header: Cert holds data that is not a PEM certificate"},
		{name: "PEM of a key", overrideParams: setKey("Cert", envoyEscape(string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}})))),
			expectErr: forwarded.ErrMalformed, expectErrText: `forwarded: malformed forwarding header: Cert holds a PEM block of type "PRIVATE KEY"`},
		{name: "PEM of garbage DER", overrideParams: setKey("Cert", envoyEscape(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2, 3}})))),
			expectErr: forwarded.ErrMalformed},

		// The certificate.
		{name: "another trust domain", overrideParams: useCert(evil),
			expectErr: forwarded.ErrInvalidSVID, expectErrText: `forwarded: the forwarded certificate is not a valid X509-SVID: spiffeid: verifying peer certificate: x509svid: could not get X509 bundle: spiffebundle: no X.509 bundle for trust domain "evil.example"`},
		{name: "a CA the bundle does not hold", overrideParams: useCert(untrustedCA),
			expectErr: forwarded.ErrInvalidSVID},
		{name: "a CA certificate as leaf", overrideParams: useCert(f.ca.Cert),
			expectErr: forwarded.ErrInvalidSVID, expectErrText: "forwarded: the forwarded certificate is not a valid X509-SVID: spiffeid: verifying peer certificate: x509svid: leaf certificate with CA flag set to true"},
		{name: "expired", overrideParams: useCert(expired),
			expectErr: forwarded.ErrInvalidSVID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := forwarded.Config{
				Format:         forwarded.FormatXFCC,
				TrustedProxies: []stsid.Pattern{stsid.RequirePattern("spiffe://example.org/ns/edge/sa/*")},
				Bundles:        f.ca.Bundle(),
			}
			if tt.overrideConfig != nil {
				tt.overrideConfig(&cfg)
			}
			p := baseline()
			if tt.overrideParams != nil {
				tt.overrideParams(&p)
			}
			policy, err := forwarded.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			res, err := policy.Client(p.hop, p.header)
			checkResult(t, res, err, p.hop, tt.expectClient, tt.expectDirect, tt.expectErr, tt.expectErrText)
		})
	}
}

func checkResult(t *testing.T, res forwarded.Result, err error, hop forwarded.Hop, expectClient string, expectDirect bool, expectErr error, expectErrText string) {
	t.Helper()
	if expectErr != nil {
		if !errors.Is(err, expectErr) {
			t.Fatalf("error = %v, want %v", err, expectErr)
		}
		if expectErrText != "" && err.Error() != expectErrText {
			t.Fatalf("error = %s\nwant    %s", err, expectErrText)
		}
		if res != (forwarded.Result{}) {
			t.Fatalf("result %+v with an error", res)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	if res.Client.ID.String() != expectClient || res.Client.Leaf == nil {
		t.Fatalf("client = %v, want %s", res.Client.ID, expectClient)
	}
	if res.Forwarded == expectDirect {
		t.Fatalf("forwarded = %v", res.Forwarded)
	}
	if res.Forwarded && res.Proxy.ID != hop.Peer.ID {
		t.Fatalf("proxy = %v, want %v", res.Proxy.ID, hop.Peer.ID)
	}
}

func TestClientCert(t *testing.T) {
	f := newFixture(t)
	type params struct {
		hop    forwarded.Hop
		header http.Header
	}
	baseline := func() params {
		return params{hop: forwarded.Hop{Peer: f.proxy}, header: http.Header{
			forwarded.HeaderClientCert:      {sfBytes(f.client.Raw)},
			forwarded.HeaderClientCertChain: {sfBytes(f.ca.Cert.Raw)},
		}}
	}
	set := func(name string, values ...string) func(*params) {
		return func(p *params) {
			if values == nil {
				delete(p.header, name)
				return
			}
			p.header[name] = values
		}
	}
	tests := []struct {
		name           string
		overrideParams func(*params)
		expectClient   string
		expectErr      error
		expectErrText  string
	}{
		{name: "baseline", expectClient: clientID},
		{name: "no chain", overrideParams: set(forwarded.HeaderClientCertChain), expectClient: clientID},
		{name: "chain on two lines (RFC 9440 §2.3)", overrideParams: set(forwarded.HeaderClientCertChain, sfBytes(f.ca.Cert.Raw), sfBytes(f.ca.Cert.Raw)), expectClient: clientID},
		{name: "chain as one list", overrideParams: set(forwarded.HeaderClientCertChain, sfBytes(f.ca.Cert.Raw)+", "+sfBytes(f.ca.Cert.Raw)), expectClient: clientID},
		{name: "parameters ignored", overrideParams: set(forwarded.HeaderClientCert, sfBytes(f.client.Raw)+";a=1"), expectClient: clientID},

		{name: "nothing forwarded", overrideParams: func(p *params) { p.header = http.Header{} },
			expectErr: forwarded.ErrNotForwarded, expectErrText: "forwarded: the trusted proxy forwarded no client certificate: no Client-Cert from " + proxyID},
		{name: "chain without a certificate", overrideParams: set(forwarded.HeaderClientCert),
			expectErr: forwarded.ErrMalformed, expectErrText: "forwarded: malformed forwarding header: Client-Cert-Chain without Client-Cert"},
		{name: "XFCC as well", overrideParams: set(forwarded.HeaderXFCC, "Cert="+envoyEscape(pemOf(f.other))),
			expectErr: forwarded.ErrOtherFormat, expectErrText: "forwarded: a forwarding header of a format this deployment does not accept: X-Forwarded-Client-Cert in a client-cert deployment"},
		{name: "two Client-Cert lines", overrideParams: set(forwarded.HeaderClientCert, sfBytes(f.client.Raw), sfBytes(f.other.Raw)),
			expectErr: forwarded.ErrDuplicate, expectErrText: "forwarded: forwarding header sent more than once: Client-Cert 2 times"},
		{name: "two certificates in Client-Cert", overrideParams: set(forwarded.HeaderClientCert, sfBytes(f.client.Raw)+", "+sfBytes(f.other.Raw)),
			expectErr: forwarded.ErrMalformed, expectErrText: "forwarded: malformed forwarding header: Client-Cert is not a structured field Item"},
		{name: "Client-Cert spelled twice", overrideParams: func(p *params) { p.header["client-cert"] = []string{sfBytes(f.other.Raw)} },
			expectErr: forwarded.ErrDuplicate, expectErrText: "forwarded: forwarding header sent more than once: Client-Cert under 2 spellings"},
		{name: "not a byte sequence", overrideParams: set(forwarded.HeaderClientCert, `"abc"`),
			expectErr: forwarded.ErrMalformed, expectErrText: "forwarded: malformed forwarding header: Client-Cert is not a Byte Sequence"},
		{name: "bad base64", overrideParams: set(forwarded.HeaderClientCert, ":not*base64:"),
			expectErr: forwarded.ErrMalformed, expectErrText: "forwarded: malformed forwarding header: Client-Cert is not a structured field Item"},
		{name: "PEM instead of DER", overrideParams: set(forwarded.HeaderClientCert, sfBytes([]byte(pemOf(f.client)))),
			expectErr: forwarded.ErrMalformed},
		{name: "chain member not a byte sequence", overrideParams: set(forwarded.HeaderClientCertChain, sfBytes(f.ca.Cert.Raw)+", abc"),
			expectErr: forwarded.ErrMalformed, expectErrText: "forwarded: malformed forwarding header: Client-Cert-Chain member 2 is not a Byte Sequence"},
		{name: "chain member an inner list", overrideParams: set(forwarded.HeaderClientCertChain, "("+sfBytes(f.ca.Cert.Raw)+")"),
			expectErr: forwarded.ErrMalformed, expectErrText: "forwarded: malformed forwarding header: Client-Cert-Chain member 1 is an inner list"},
		{name: "chain too long", overrideParams: set(forwarded.HeaderClientCertChain, strings.Repeat(sfBytes(f.ca.Cert.Raw)+", ", 4)+sfBytes(f.ca.Cert.Raw)),
			expectErr: forwarded.ErrChainTooLong, expectErrText: "forwarded: forwarded certificate chain too long: Client-Cert-Chain holds more than 4 certificates"},
		{name: "chain lines too large in all", overrideParams: func(p *params) {
			line := sfBytes(make([]byte, 9<<10))
			p.header[forwarded.HeaderClientCertChain] = []string{line, line}
		}, expectErr: forwarded.ErrTooLarge},
		{name: "oversize", overrideParams: set(forwarded.HeaderClientCert, sfBytes(make([]byte, 13<<10))),
			expectErr: forwarded.ErrTooLarge, expectErrText: "forwarded: forwarding header too large: Client-Cert of 17754 bytes (at most 16384)"},
		{name: "a CA certificate as leaf", overrideParams: set(forwarded.HeaderClientCert, sfBytes(f.ca.Cert.Raw)),
			expectErr: forwarded.ErrInvalidSVID},
		{name: "another trust domain", overrideParams: set(forwarded.HeaderClientCert, sfBytes(f.evil.SVID(t, "spiffe://evil.example/ns/prod/sa/web", time.Hour).Certificates[0].Raw)),
			expectErr: forwarded.ErrInvalidSVID},
		{name: "from an untrusted hop", overrideParams: func(p *params) { p.hop.Peer = f.stranger },
			expectErr: forwarded.ErrUntrustedHop},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			policy, err := forwarded.New(forwarded.Config{
				Format:         forwarded.FormatClientCert,
				TrustedProxies: []stsid.Pattern{stsid.RequirePattern(proxyID)},
				Bundles:        f.ca.Bundle(),
			})
			if err != nil {
				t.Fatal(err)
			}
			p := baseline()
			if tt.overrideParams != nil {
				tt.overrideParams(&p)
			}
			res, err := policy.Client(p.hop, p.header)
			checkResult(t, res, err, p.hop, tt.expectClient, false, tt.expectErr, tt.expectErrText)
		})
	}
}

func TestNew(t *testing.T) {
	f := newFixture(t)
	good := func() forwarded.Config {
		return forwarded.Config{Format: forwarded.FormatXFCC, TrustedProxies: []stsid.Pattern{stsid.RequirePattern(proxyID)}, Bundles: f.ca.Bundle()}
	}
	for _, tt := range []struct {
		name           string
		overrideConfig func(*forwarded.Config)
		expectErr      string
	}{
		{name: "baseline"},
		{name: "Unix socket only", overrideConfig: func(c *forwarded.Config) { c.TrustedProxies = nil; c.TrustUnixSocket = true }},
		{name: "no format", overrideConfig: func(c *forwarded.Config) { c.Format = "" }, expectErr: `forwarded: unknown format ""`},
		{name: "no bundles", overrideConfig: func(c *forwarded.Config) { c.Bundles = nil }, expectErr: "forwarded: no bundles"},
		{name: "nobody trusted", overrideConfig: func(c *forwarded.Config) { c.TrustedProxies = nil }, expectErr: "forwarded: no trusted proxies"},
		{name: "zero pattern", overrideConfig: func(c *forwarded.Config) { c.TrustedProxies = []stsid.Pattern{{}} }, expectErr: "forwarded: empty trusted proxy pattern"},
		{name: "negative limit", overrideConfig: func(c *forwarded.Config) { c.MaxChainLength = -1 }, expectErr: "forwarded: negative limit"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := good()
			if tt.overrideConfig != nil {
				tt.overrideConfig(&cfg)
			}
			_, err := forwarded.New(cfg)
			if (err == nil) != (tt.expectErr == "") || (err != nil && err.Error() != tt.expectErr) {
				t.Fatalf("error = %v, want %q", err, tt.expectErr)
			}
		})
	}
}

func TestParseFormat(t *testing.T) {
	if f, err := forwarded.ParseFormat("xfcc"); err != nil || f != forwarded.FormatXFCC {
		t.Fatalf("ParseFormat(xfcc) = %v, %v", f, err)
	}
	if _, err := forwarded.ParseFormat("XFCC"); err == nil || err.Error() != `forwarded: unknown format "XFCC" (want "xfcc" or "client-cert")` {
		t.Fatalf("ParseFormat(XFCC) error = %v", err)
	}
	if !forwarded.Format("").IsZero() || forwarded.FormatClientCert.String() != "client-cert" {
		t.Fatal("IsZero/String")
	}
}

func TestDescribe(t *testing.T) {
	for err, want := range map[error]string{
		forwarded.ErrUntrustedHop:        "a forwarded client certificate is accepted only from a trusted proxy",
		forwarded.ErrNotForwarded:        "the proxy forwarded no client certificate",
		forwarded.ErrNoClientCertificate: "no client certificate",
		forwarded.ErrInvalidSVID:         "the forwarded client certificate is not a valid X509-SVID",
		forwarded.ErrDuplicate:           "the forwarded client certificate header is invalid",
	} {
		if got := forwarded.Describe(errors.Join(errors.New("detail"), err)); got != want {
			t.Errorf("Describe(%v) = %q, want %q", err, got, want)
		}
	}
}

// FuzzParseClientCert checks that ParseClientCert never panics and that a
// success returns the leaf and no more than the chain bound.
func FuzzParseClientCert(f *testing.F) {
	ca := testca.New(f, "example.org")
	leaf := ca.SVID(f, clientID, time.Hour).Certificates[0]
	f.Add(sfBytes(leaf.Raw), "")
	f.Add(sfBytes(leaf.Raw), sfBytes(ca.Cert.Raw)+", "+sfBytes(ca.Cert.Raw))
	f.Add(sfBytes(leaf.Raw)+";a=1", "(:AA==:)")
	f.Add(":AA==:", ":AA==:")
	f.Add(`"x"`, "a, b")
	f.Fuzz(func(t *testing.T, cert, chain string) {
		var lines []string
		if chain != "" {
			lines = strings.Split(chain, "\n")
		}
		certs, err := forwarded.ParseClientCert(cert, lines, 5)
		if err != nil {
			return
		}
		if len(certs) == 0 || len(certs) > 5 || certs[0] == nil {
			t.Fatalf("%d certificates", len(certs))
		}
	})
}
