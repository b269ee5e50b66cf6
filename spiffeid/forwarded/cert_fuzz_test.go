package forwarded

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spiffe-sts/spiffe-sts/internal/testca"
)

// FuzzXFCCCertificates feeds the Cert, Chain and Hash values of an
// x-forwarded-client-cert element, URL-encoded PEM as Envoy writes them,
// to the decoder behind Policy.Client. It must never panic, must refuse
// with the package's errors, and may accept only 1 to maxChain
// certificates whose leaf matches Hash when one is given.
func FuzzXFCCCertificates(f *testing.F) {
	const maxChain = 3
	ca := testca.New(f, "example.org")
	leaf := ca.SVID(f, "spiffe://example.org/ns/prod/sa/web", time.Hour).Certificates[0]
	pemOf := func(ders ...[]byte) string {
		var b strings.Builder
		for _, der := range ders {
			_ = pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: der})
		}
		return strings.ReplaceAll(url.QueryEscape(b.String()), "+", "%20")
	}
	sum := sha256.Sum256(leaf.Raw)
	hash := hex.EncodeToString(sum[:])
	f.Add(pemOf(leaf.Raw), "", hash)
	f.Add(pemOf(leaf.Raw), pemOf(leaf.Raw, ca.Cert.Raw), "")
	f.Add("", pemOf(leaf.Raw, ca.Cert.Raw, ca.Cert.Raw, ca.Cert.Raw), "")
	f.Add(pemOf(leaf.Raw, leaf.Raw), "", strings.ToUpper(hash))
	f.Add(pemOf(leaf.Raw)+"junk", "", "")
	f.Add(pemOf(leaf.Raw[:len(leaf.Raw)/2]), "", "00")
	f.Add(strings.ReplaceAll(pemOf(leaf.Raw), "CERTIFICATE", "PRIVATE%20KEY"), "", "")
	f.Add("-----BEGIN%20CERTIFICATE-----%0AProc-Type:%204,ENCRYPTED%0A%0AMIIB%0A-----END%20CERTIFICATE-----%0A", "", "")
	f.Add("%zz", "%", "")
	f.Fuzz(func(t *testing.T, cert, chain, hash string) {
		var el XFCCElement
		for _, p := range []XFCCPair{{"Hash", hash}, {"Cert", cert}, {"Chain", chain}} {
			if p.Value != "" {
				el = append(el, p)
			}
		}
		certs, err := certsFromXFCC(el, maxChain)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrNoCertificate) &&
				!errors.Is(err, ErrMultipleCertificates) && !errors.Is(err, ErrChainTooLong) {
				t.Fatalf("undocumented error %v", err)
			}
			return
		}
		if len(certs) == 0 || len(certs) > maxChain {
			t.Fatalf("%d certificates accepted", len(certs))
		}
		for _, c := range certs {
			if c == nil {
				t.Fatal("nil certificate accepted")
			}
		}
		if hash != "" {
			sum := sha256.Sum256(certs[0].Raw)
			if !strings.EqualFold(hash, hex.EncodeToString(sum[:])) {
				t.Fatalf("leaf does not match Hash %q", hash)
			}
		}
		if cert != "" && chain != "" {
			single, err := decodeURLPEM(cert, "Cert", 1)
			if err != nil || !single[0].Equal(certs[0]) {
				t.Fatal("the leaf is not Cert")
			}
		}
	})
}
