package forwardedtest

import (
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"

	stsid "github.com/spiffe-sts/spiffe-sts/spiffeid"
	"github.com/spiffe-sts/spiffe-sts/spiffeid/forwarded"
)

// xfccEscaper percent-encodes a PEM block as Envoy does in the Cert field.
var xfccEscaper = strings.NewReplacer("\n", "%0A", " ", "%20", "+", "%2B", "/", "%2F", "=", "%3D")

// XFCC is the x-forwarded-client-cert element the proxy by appends for the
// client certificate c, as Envoy writes it (SANITIZE_SET, cert and URI).
func XFCC(by string, c *x509.Certificate) string {
	p := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
	return forwarded.XFCCElement{{Key: "By", Value: by}, {Key: "Cert", Value: xfccEscaper.Replace(p)}, {Key: "URI", Value: c.URIs[0].String()}}.String()
}

// Policy is an XFCC policy that trusts the hops matching proxies and
// verifies forwarded certificates against bundles.
func Policy(t testing.TB, bundles x509bundle.Source, proxies ...string) *forwarded.Policy {
	t.Helper()
	patterns := make([]stsid.Pattern, 0, len(proxies))
	for _, p := range proxies {
		patterns = append(patterns, stsid.RequirePattern(p))
	}
	p, err := forwarded.New(forwarded.Config{
		Format:         forwarded.FormatXFCC,
		TrustedProxies: patterns,
		Bundles:        bundles,
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}
