// Package ststest runs a real exchange.Server in-process on a loopback TLS
// listener, with identities from an in-test CA, for the tests of the
// server, its clients and its tools.
package ststest

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/exchange"
	"github.com/spiffe-sts/spiffe-sts/exchange/exchangepb"
	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
	"github.com/spiffe-sts/spiffe-sts/internal/testca"
	"github.com/spiffe-sts/spiffe-sts/issuer"
	stsid "github.com/spiffe-sts/spiffe-sts/spiffeid"
)

// Identities and audiences of the default policy.
const (
	// WorkloadID and OtherID are allowed by the default policy.
	WorkloadID = "spiffe://example.org/ns/prod/sa/web"
	OtherID    = "spiffe://example.org/ns/prod/sa/db"
	// DeniedID matches no rule.
	DeniedID = "spiffe://example.org/ns/dev/sa/web"
	// ServerID is the STS's own SPIFFE ID.
	ServerID = "spiffe://example.org/sts"
	// APIAudience and OrdersResource are the allowed audiences.
	APIAudience    = "spiffe://example.org/api"
	OrdersResource = "https://api.example.org/orders"
)

// STS is a running exchange.Server.
type STS struct {
	// CA issues example.org identities; Evil issues evil.example ones,
	// which the server does not trust.
	CA, Evil *testca.CA
	// SVID is the server's own X509-SVID.
	SVID *x509svid.SVID
	// URL is the issuer URL, https://127.0.0.1:port.
	URL    string
	Issuer *issuer.Issuer
	Server *exchange.Server
	// HTTP is Server.HTTPServer serving on the listener; Start closes it
	// when the test ends.
	HTTP  *http.Server
	svids map[string]*x509svid.SVID
}

// DefaultPolicy allows spiffe://example.org/ns/prod/sa/* the audiences
// APIAudience and OrdersResource, scopes read, write and admin (read by
// default), for at most five minutes.
func DefaultPolicy(t testing.TB) *stsid.Policy {
	t.Helper()
	policy, err := stsid.NewPolicy([]stsid.Rule{{
		Pattern:       stsid.RequirePattern("spiffe://example.org/ns/prod/sa/*"),
		Audiences:     []string{APIAudience, OrdersResource},
		Scopes:        []string{"read", "write", "admin"},
		DefaultScopes: []string{"read"},
		MaxTTL:        5 * time.Minute,
	}})
	if err != nil {
		t.Fatal(err)
	}
	return policy
}

// Start runs a server; overrideConfig may change the configuration first.
// The server stops when the test ends.
func Start(t testing.TB, overrideConfig func(*exchange.Config)) *STS {
	t.Helper()
	s := &STS{CA: testca.New(t, "example.org"), Evil: testca.New(t, "evil.example"), svids: map[string]*x509svid.SVID{}}
	s.SVID = s.CA.SVID(t, ServerID, time.Hour)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.URL = "https://" + ln.Addr().String()
	s.Issuer = NewIssuer(t, s.URL, nil)
	cfg := exchange.Config{
		IssuerURL:   s.URL,
		TrustDomain: s.CA.TrustDomain,
		SVIDs:       s.SVID,
		X509Bundles: s.CA.Bundle(),
		JWTBundles:  s.CA.Bundle(),
		Policy:      DefaultPolicy(t),
		Minter:      s.Issuer,
		Keys:        s.Issuer.KeySet(),
	}
	if overrideConfig != nil {
		overrideConfig(&cfg)
	}
	if s.Server, err = exchange.New(cfg); err != nil {
		t.Fatal(err)
	}
	s.HTTP = s.Server.HTTPServer(s.SVID)
	go func() { _ = s.HTTP.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = s.HTTP.Close() })
	return s
}

// WorkloadSVID returns an X509-SVID for id from the example.org CA, the
// same one for the same id within this STS.
func (s *STS) WorkloadSVID(t testing.TB, id string) *x509svid.SVID {
	t.Helper()
	if svid, ok := s.svids[id]; ok {
		return svid
	}
	svid := s.CA.SVID(t, id, time.Hour)
	s.svids[id] = svid
	return svid
}

// JWTSVID returns a JWT-SVID for sub addressed to the server.
func (s *STS) JWTSVID(t testing.TB, sub string) string {
	t.Helper()
	return s.CA.JWTSVID(t, sub, []string{s.URL}, time.Now().Add(time.Minute))
}

// TLSConfig returns a client TLS configuration presenting svid (none when
// nil) and authorizing the server's SPIFFE ID.
func (s *STS) TLSConfig(svid *x509svid.SVID) *tls.Config {
	if svid == nil {
		return tlsconfig.TLSClientConfig(s.CA.Bundle(), tlsconfig.AuthorizeID(s.SVID.ID))
	}
	return tlsconfig.MTLSClientConfig(svid, s.CA.Bundle(), tlsconfig.AuthorizeID(s.SVID.ID))
}

// Client returns an HTTP client using TLSConfig(svid).
func (s *STS) Client(svid *x509svid.SVID) *http.Client {
	return &http.Client{Transport: &http.Transport{TLSClientConfig: s.TLSConfig(svid), ForceAttemptHTTP2: true}, Timeout: 10 * time.Second}
}

// GRPCClient returns a client of the gRPC API, on the server's listener,
// over TLSConfig(svid). Its connection closes when the test ends.
func (s *STS) GRPCClient(t testing.TB, svid *x509svid.SVID) exchangepb.TokenExchangeClient {
	t.Helper()
	conn, err := grpc.NewClient("passthrough:///"+strings.TrimPrefix(s.URL, "https://"),
		grpc.WithTransportCredentials(credentials.NewTLS(s.TLSConfig(svid))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return exchangepb.NewTokenExchangeClient(conn)
}

// Post sends body to the token endpoint and returns the response with its
// body read.
func (s *STS) Post(t testing.TB, c *http.Client, contentType, body string) (*http.Response, []byte) {
	t.Helper()
	return s.PostTo(t, c, protocol.PathToken, contentType, body)
}

// PostTo sends body to the endpoint at path (protocol.PathToken,
// protocol.PathIntrospect) and returns the response with its body read.
func (s *STS) PostTo(t testing.TB, c *http.Client, path, contentType, body string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, s.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, raw
}

// Verifier returns a resource-server verifier for aud.
func (s *STS) Verifier(aud string) *accesstoken.Verifier {
	return s.VerifierWith(aud, nil)
}

// NewIssuer is an issuer for issuerURL signing with a fresh ES256 key, on
// clock (time.Now when nil).
func NewIssuer(t testing.TB, issuerURL string, clock func() time.Time) *issuer.Issuer {
	t.Helper()
	signer, err := issuer.GenerateSigner(jwa.ES256())
	if err != nil {
		t.Fatal(err)
	}
	keys, err := issuer.StaticKeys(signer)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := issuer.New(issuer.Config{IssuerURL: issuerURL, Keys: keys, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	return iss
}
