// Package testca is an in-test SPIFFE certificate authority: it issues
// X509-SVIDs and JWT-SVIDs for unit tests and exposes its bundles through
// go-spiffe's bundle types, so tests run real verification code against
// fake identities.
package testca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"math/big"
	"net/url"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// CA is a trust domain's X.509 and JWT signing authority.
type CA struct {
	TrustDomain spiffeid.TrustDomain
	Cert        *x509.Certificate
	key         crypto.Signer
	jwtKey      crypto.Signer
	jwtKeyID    string
	bundle      *spiffebundle.Bundle
}

// New creates a CA for trustDomain.
func New(t testing.TB, trustDomain string) *CA {
	t.Helper()
	td := spiffeid.RequireTrustDomainFromString(trustDomain)
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: "test CA " + trustDomain},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		URIs:                  []*url.URL{td.ID().URL()},
	}
	cert := createCert(t, tmpl, tmpl, key.Public(), key)
	ca := &CA{TrustDomain: td, Cert: cert, key: key, jwtKey: newKey(t), jwtKeyID: "jwt-" + trustDomain}
	ca.bundle = spiffebundle.New(td)
	ca.bundle.AddX509Authority(cert)
	if err := ca.bundle.AddJWTAuthority(ca.jwtKeyID, ca.jwtKey.Public()); err != nil {
		t.Fatal(err)
	}
	return ca
}

// Bundle returns the CA's SPIFFE bundle; it is an x509bundle.Source and a
// jwtbundle.Source.
func (ca *CA) Bundle() *spiffebundle.Bundle { return ca.bundle }

// SVID issues an X509-SVID for id valid from now-1m for ttl.
func (ca *CA) SVID(t testing.TB, id string, ttl time.Duration) *x509svid.SVID {
	t.Helper()
	return ca.SVIDValid(t, id, time.Now().Add(-time.Minute), time.Now().Add(ttl))
}

// SVIDValid issues an X509-SVID for id valid from notBefore to notAfter,
// which need not lie within the CA's own validity.
func (ca *CA) SVIDValid(t testing.TB, id string, notBefore, notAfter time.Time) *x509svid.SVID {
	t.Helper()
	spiffeID := spiffeid.RequireFromString(id)
	leaf, key := ca.issue(t, notBefore, notAfter, []*url.URL{spiffeID.URL()})
	return &x509svid.SVID{ID: spiffeID, Certificates: []*x509.Certificate{leaf}, PrivateKey: key}
}

// Leaf issues a leaf certificate, valid from now-1m for an hour, whose URI
// SANs are uris verbatim: none, several, or URIs that are not SPIFFE IDs,
// for tests of how malformed identities are refused. For a well-formed one
// use SVID; for a CA certificate presented as a leaf use ca.Cert; for a CA
// of the same trust domain that the bundle does not trust call New again.
func (ca *CA) Leaf(t testing.TB, uris ...string) *x509.Certificate {
	t.Helper()
	var sans []*url.URL
	for _, u := range uris {
		parsed, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		sans = append(sans, parsed)
	}
	leaf, _ := ca.issue(t, time.Now().Add(-time.Minute), time.Now().Add(time.Hour), sans)
	return leaf
}

// issue signs a leaf certificate with the given validity and URI SANs for a
// fresh key.
func (ca *CA) issue(t testing.TB, notBefore, notAfter time.Time, uris []*url.URL) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	key := newKey(t)
	tmpl := &x509.Certificate{
		SerialNumber: serial(t),
		NotBefore:    notBefore,
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		URIs:         uris,
	}
	return createCert(t, tmpl, ca.Cert, key.Public(), ca.key), key
}

// JWTSVID issues a JWT-SVID for sub with the given audience and expiry,
// signed with the CA's JWT authority.
func (ca *CA) JWTSVID(t testing.TB, sub string, audience []string, expiry time.Time) string {
	t.Helper()
	return SignJWT(t, ca.jwtKey, ca.jwtKeyID, map[string]any{
		"sub": sub, "aud": audience, "exp": expiry.Unix(), "iat": time.Now().Unix(),
	})
}

// SignJWT signs claims with key (ES256) under kid, typ JWT.
func SignJWT(t testing.TB, key crypto.Signer, kid string, claims map[string]any) string {
	t.Helper()
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	hdr := jws.NewHeaders()
	_ = hdr.Set(jws.KeyIDKey, kid)
	_ = hdr.Set(jws.TypeKey, "JWT")
	raw, err := jws.Sign(payload, jws.WithKey(jwa.ES256(), key, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}

// NewKey returns a fresh P-256 key.
func NewKey(t testing.TB) crypto.Signer { return newKey(t) }

func newKey(t testing.TB) crypto.Signer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func createCert(t testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// JWTKey returns the CA's JWT signing key, for tests that craft unusual
// JWT-SVIDs.
func (ca *CA) JWTKey() crypto.Signer { return ca.jwtKey }

// JWTKeyID returns the key ID of the CA's JWT authority.
func (ca *CA) JWTKeyID() string { return ca.jwtKeyID }
