package forwarded

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"net/url"
	"strings"

	"github.com/dunglas/httpsfv"
)

// certsFromXFCC returns the client certificate chain (leaf first) of the
// element a proxy appended: its Cert, with the rest of its Chain when
// present, or its Chain alone. A Hash is checked against the certificate
// when present but never used in its place.
func certsFromXFCC(el XFCCElement, maxChain int) ([]*x509.Certificate, error) {
	for _, key := range []string{"By", "Hash", "Cert", "Chain"} {
		if len(el.Values(key)) > 1 {
			if key == "Cert" {
				return nil, fmt.Errorf("%w: the element has %d Cert keys", ErrMultipleCertificates, len(el.Values(key)))
			}
			return nil, fmt.Errorf("%w: the element repeats the %s key", ErrMalformed, key)
		}
	}
	certValues, chainValues := el.Values("Cert"), el.Values("Chain")
	var leaf *x509.Certificate
	var chain []*x509.Certificate
	if len(certValues) == 1 {
		certs, err := decodeURLPEM(certValues[0], "Cert", 1)
		if err != nil {
			return nil, err
		}
		leaf = certs[0]
	}
	if len(chainValues) == 1 {
		certs, err := decodeURLPEM(chainValues[0], "Chain", maxChain)
		if err != nil {
			return nil, err
		}
		if leaf != nil && !leaf.Equal(certs[0]) {
			return nil, fmt.Errorf("%w: the first certificate of Chain is not Cert", ErrMalformed)
		}
		leaf, chain = certs[0], certs[1:]
	}
	if leaf == nil {
		return nil, fmt.Errorf("%w: the element has no Cert or Chain", ErrNoCertificate)
	}
	if hashes := el.Values("Hash"); len(hashes) == 1 {
		sum := sha256.Sum256(leaf.Raw)
		if subtle.ConstantTimeCompare([]byte(strings.ToLower(hashes[0])), []byte(hex.EncodeToString(sum[:]))) != 1 {
			return nil, fmt.Errorf("%w: Hash is not the SHA-256 of the certificate", ErrMalformed)
		}
	}
	return append([]*x509.Certificate{leaf}, chain...), nil
}

// decodeURLPEM decodes a URL-encoded PEM value holding 1 to max
// CERTIFICATE blocks and nothing else. Envoy percent-encodes the PEM, so
// '+' is a literal plus (path unescaping), never a space.
func decodeURLPEM(v, key string, max int) ([]*x509.Certificate, error) {
	raw, err := url.PathUnescape(v)
	if err != nil {
		return nil, fmt.Errorf("%w: %s is not URL-encoded: %w", ErrMalformed, key, err)
	}
	rest := []byte(raw)
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" || len(block.Headers) != 0 {
			return nil, fmt.Errorf("%w: %s holds a PEM block of type %q", ErrMalformed, key, block.Type)
		}
		if len(certs) == max {
			if max == 1 {
				return nil, fmt.Errorf("%w: %s holds more than one certificate", ErrMultipleCertificates, key)
			}
			return nil, fmt.Errorf("%w: %s holds more than %d certificates", ErrChainTooLong, key, max)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrMalformed, key, err)
		}
		certs = append(certs, cert)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("%w: %s holds data that is not a PEM certificate", ErrMalformed, key)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%w: %s holds no PEM certificate", ErrMalformed, key)
	}
	return certs, nil
}

// ParseClientCert parses RFC 9440 fields: cert, the Client-Cert value (an
// RFC 8941 §3.3.5 Byte Sequence Item holding the DER certificate, RFC 9440
// §2.2), and chain, the Client-Cert-Chain field lines (an RFC 8941 §3.1
// List of such Byte Sequences, in TLS order without the leaf, RFC 9440
// §2.3), which may be empty. It returns the leaf followed by the chain.
// Parameters on the items are ignored (RFC 8941 §3.1.2). Structured-field
// parsing is httpsfv's (RFC 8941 §4.2); callers bound the input first.
func ParseClientCert(cert string, chain []string, maxChain int) ([]*x509.Certificate, error) {
	item, err := httpsfv.UnmarshalItem([]string{cert})
	if err != nil {
		return nil, fmt.Errorf("%w: Client-Cert is not a structured field Item", ErrMalformed)
	}
	der, ok := item.Value.([]byte)
	if !ok {
		return nil, fmt.Errorf("%w: Client-Cert is not a Byte Sequence", ErrMalformed)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("%w: Client-Cert: %w", ErrMalformed, err)
	}
	certs := []*x509.Certificate{leaf}
	if len(chain) == 0 {
		return certs, nil
	}
	list, err := httpsfv.UnmarshalList(chain)
	if err != nil {
		return nil, fmt.Errorf("%w: Client-Cert-Chain is not a structured field List", ErrMalformed)
	}
	if len(list) == 0 {
		return nil, fmt.Errorf("%w: Client-Cert-Chain is empty", ErrMalformed)
	}
	if 1+len(list) > maxChain {
		return nil, fmt.Errorf("%w: Client-Cert-Chain holds more than %d certificates", ErrChainTooLong, maxChain-1)
	}
	for i, member := range list {
		item, ok := member.(httpsfv.Item)
		if !ok {
			return nil, fmt.Errorf("%w: Client-Cert-Chain member %d is an inner list", ErrMalformed, i+1)
		}
		der, ok := item.Value.([]byte)
		if !ok {
			return nil, fmt.Errorf("%w: Client-Cert-Chain member %d is not a Byte Sequence", ErrMalformed, i+1)
		}
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("%w: Client-Cert-Chain member %d: %w", ErrMalformed, i+1, err)
		}
		certs = append(certs, c)
	}
	return certs, nil
}
