package issuer_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"

	"github.com/spiffe-sts/spiffe-sts/issuer"
)

const (
	testIssuerURL = "https://sts.example.org"
	testSPIFFEID  = "spiffe://example.org/workload"
	testAudience  = "spiffe://example.org/api"
)

// testNow is the fixed clock of the tests; its fraction of a second checks
// that token times are truncated.
var testNow = time.Date(2030, 1, 2, 3, 4, 5, 678_000_000, time.UTC)

func fixedClock() time.Time { return testNow }

// testCA is an in-test certificate authority issuing X509-SVID-like leaves.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

var (
	caOnce sync.Once
	ca     testCA
)

func testCAOnce() testCA {
	caOnce.Do(func() {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			panic(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber:          big.NewInt(1),
			Subject:               pkix.Name{CommonName: "test CA"},
			NotBefore:             testNow.Add(-24 * time.Hour),
			NotAfter:              testNow.Add(365 * 24 * time.Hour),
			IsCA:                  true,
			BasicConstraintsValid: true,
			KeyUsage:              x509.KeyUsageCertSign,
			URIs:                  []*url.URL{{Scheme: "spiffe", Host: "example.org"}},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
		if err != nil {
			panic(err)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			panic(err)
		}
		ca = testCA{cert: cert, key: key}
	})
	return ca
}

var serial atomic.Int64

// newLeaf returns a leaf certificate for testSPIFFEID from the test CA that
// expires at notAfter (whole seconds, as X.509 encodes it).
func newLeaf(tb testing.TB, notAfter time.Time) *x509.Certificate {
	tb.Helper()
	cert, err := makeLeaf(notAfter)
	if err != nil {
		tb.Fatal(err)
	}
	return cert
}

func makeLeaf(notAfter time.Time) (*x509.Certificate, error) {
	ca := testCAOnce()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	id, _ := url.Parse(testSPIFFEID)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial.Add(1) + 1),
		NotBefore:    testNow.Add(-time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{id},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

var (
	signersMu sync.Mutex
	signers   = map[jwa.SignatureAlgorithm]issuer.Signer{}
)

// testSigner returns a signer for alg, shared by the tests to save RSA key
// generation time.
func testSigner(tb testing.TB, alg jwa.SignatureAlgorithm) issuer.Signer {
	tb.Helper()
	signersMu.Lock()
	defer signersMu.Unlock()
	if s, ok := signers[alg]; ok {
		return s
	}
	s, err := issuer.GenerateSigner(alg)
	if err != nil {
		tb.Fatalf("GenerateSigner(%s): %v", alg, err)
	}
	signers[alg] = s
	return s
}
