package extauthz

import (
	"encoding/pem"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spiffe-sts/spiffe-sts/internal/testca"
)

// FuzzVerifyPeer feeds Envoy's source certificate attribute, one
// URL-encoded PEM certificate, to verifyPeer. It must never panic and may
// accept only a certificate that decodes from the value and is an
// X509-SVID of the trusted CA.
func FuzzVerifyPeer(f *testing.F) {
	const id = "spiffe://example.org/ns/prod/sa/web"
	ca := testca.New(f, "example.org")
	evil := testca.New(f, "example.org")
	leaf := ca.SVID(f, id, time.Hour).Certificates[0]
	escape := func(blocks ...*pem.Block) string {
		var b strings.Builder
		for _, block := range blocks {
			_ = pem.Encode(&b, block)
		}
		return url.PathEscape(b.String())
	}
	certBlock := &pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw}
	f.Add(escape(certBlock))
	f.Add(escape(certBlock, certBlock))
	f.Add(escape(&pem.Block{Type: "CERTIFICATE", Bytes: evil.SVID(f, id, time.Hour).Certificates[0].Raw}))
	f.Add(escape(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Cert.Raw}))
	f.Add(escape(&pem.Block{Type: "CERTIFICATE", Headers: map[string]string{"Proc-Type": "4,ENCRYPTED"}, Bytes: leaf.Raw}))
	f.Add(escape(&pem.Block{Type: "PUBLIC KEY", Bytes: leaf.RawSubjectPublicKeyInfo}))
	f.Add(escape(certBlock) + "%zz")
	f.Add("")
	s := &Server{cfg: Config{Bundles: ca.Bundle()}}
	f.Fuzz(func(t *testing.T, v string) {
		peer, err := s.verifyPeer(v)
		if err != nil {
			return
		}
		if peer.ID.String() != id || !peer.Leaf.Equal(leaf) {
			t.Fatalf("accepted %s with leaf %v", peer.ID, peer.Leaf.Subject)
		}
		decoded, err := url.PathUnescape(v)
		if err != nil {
			t.Fatalf("accepted a value that is not URL-encoded: %v", err)
		}
		if block, _ := pem.Decode([]byte(decoded)); block == nil || block.Type != "CERTIFICATE" {
			t.Fatal("accepted a value that is not a PEM certificate")
		}
	})
}
