package issuer_test

import (
	"crypto/x509"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"

	"github.com/spiffe-sts/spiffe-sts/internal/testca"
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

// newLeaf returns an X509-SVID certificate for testSPIFFEID, from a test
// CA, that expires at notAfter (whole seconds, as X.509 encodes it).
func newLeaf(tb testing.TB, notAfter time.Time) *x509.Certificate {
	tb.Helper()
	return testca.New(tb, "example.org").SVIDValid(tb, testSPIFFEID, testNow.Add(-time.Hour), notAfter).Certificates[0]
}

// exampleTB stands in for the testing.TB that examples lack, so that they
// can use newLeaf: a failure panics, as examples do on errors. Only the
// methods testca calls are implemented.
type exampleTB struct{ testing.TB }

func (exampleTB) Helper()                           {}
func (exampleTB) Fatal(args ...any)                 { panic(fmt.Sprint(args...)) }
func (exampleTB) Fatalf(format string, args ...any) { panic(fmt.Sprintf(format, args...)) }

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
