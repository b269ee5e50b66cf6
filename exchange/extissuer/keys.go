package extissuer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"slices"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"

	"github.com/spiffe-sts/spiffe-sts/internal/jwtcheck"
)

// minRSABits is the smallest RSA modulus accepted.
const minRSABits = 2048

// maxJWKSBytes bounds the JWKS document read by jwksTransport; it matches
// the bound of accesstoken.RemoteKeySet, which sees the larger document
// and reports it.
const maxJWKSBytes = 1 << 20

// signatureKeys returns the public part of the keys of set that verify
// signatures, each with its "alg" (see the package documentation). Keys for
// encryption are skipped. Other unusable keys, and keys whose kid an
// earlier key has, are an error when strict and skipped otherwise.
func signatureKeys(set jwk.Set, algs []jwa.SignatureAlgorithm, strict bool) (jwk.Set, error) {
	out := jwk.NewSet()
	seen := make(map[string]bool, set.Len())
	for k := 0; k < set.Len(); k++ {
		key, _ := set.Key(k)
		if use, _ := key.KeyUsage(); use == string(jwk.ForEncryption) {
			continue
		}
		var kid string
		pub, err := jwk.PublicKeyOf(key)
		if err == nil {
			kid, _ = pub.KeyID()
			err = prepareKey(pub, algs)
		}
		if err == nil && seen[kid] {
			err = fmt.Errorf("%q: another key has the same kid", kid)
		}
		if err == nil {
			err = out.AddKey(pub)
		}
		switch {
		case err == nil:
			seen[kid] = true
		case strict:
			return nil, fmt.Errorf("key %d: %w", k, err)
		}
	}
	return out, nil
}

// prepareKey checks that the public key can verify signatures and sets its
// "alg" when absent.
func prepareKey(key jwk.Key, algs []jwa.SignatureAlgorithm) error {
	kid, _ := key.KeyID()
	switch {
	case key.KeyType() == jwa.OctetSeq():
		return fmt.Errorf("%q is a symmetric key", kid)
	case kid == "":
		return errors.New("no kid")
	}
	// jwx refuses small RSA keys only as long as its process-wide minimum
	// is not lowered; this check does not depend on it.
	if rsaKey, ok := key.(jwk.RSAPublicKey); ok {
		n, _ := rsaKey.N()
		if bits := new(big.Int).SetBytes(n).BitLen(); bits < minRSABits {
			return fmt.Errorf("%q: RSA key of %d bits, want at least %d", kid, bits, minRSABits)
		}
	}
	if jwtcheck.KeyAlgorithm(key) != "" {
		return nil
	}
	var fit []jwa.SignatureAlgorithm
	for _, alg := range algs {
		if slices.Contains(algorithmsFor(key), alg) {
			fit = append(fit, alg)
		}
	}
	if len(fit) != 1 {
		return fmt.Errorf("%q has no alg, and %d of the accepted algorithms fit it (want exactly 1)", kid, len(fit))
	}
	return key.Set(jwk.AlgorithmKey, fit[0])
}

// algorithmsFor returns the signature algorithms key can verify by its type
// and curve.
func algorithmsFor(key jwk.Key) []jwa.SignatureAlgorithm {
	switch k := key.(type) {
	case jwk.RSAPublicKey:
		return []jwa.SignatureAlgorithm{jwa.RS256(), jwa.RS384(), jwa.RS512(), jwa.PS256(), jwa.PS384(), jwa.PS512()}
	case jwk.ECDSAPublicKey:
		crv, _ := k.Crv()
		return ecdsaAlgorithm(crv)
	case jwk.OKPPublicKey:
		crv, _ := k.Crv()
		return okpAlgorithm(crv)
	}
	return nil
}

func ecdsaAlgorithm(crv jwa.EllipticCurveAlgorithm) []jwa.SignatureAlgorithm {
	switch crv {
	case jwa.P256():
		return []jwa.SignatureAlgorithm{jwa.ES256()}
	case jwa.P384():
		return []jwa.SignatureAlgorithm{jwa.ES384()}
	case jwa.P521():
		return []jwa.SignatureAlgorithm{jwa.ES512()}
	}
	return nil
}

func okpAlgorithm(crv jwa.EllipticCurveAlgorithm) []jwa.SignatureAlgorithm {
	if crv == jwa.Ed25519() {
		return []jwa.SignatureAlgorithm{jwa.EdDSA()}
	}
	return nil
}

// jwksTransport rewrites the JWKS document on its way to
// accesstoken.RemoteKeySet, which needs every key to have a "kid" and an
// "alg": it keeps the usable signature keys only, with "alg" set (see
// signatureKeys). A document that is not a JWKS passes unchanged, for the
// key set to report.
type jwksTransport struct {
	base http.RoundTripper // http.DefaultTransport when nil
	algs []jwa.SignatureAlgorithm
}

// RoundTrip implements http.RoundTripper.
func (t *jwksTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	// RemoteKeySet insists on an https JWKS URL; redirects must not
	// leave https either.
	if req.URL.Scheme != "https" {
		return nil, fmt.Errorf("extissuer: JWKS request to %s is not https", req.URL.Redacted())
	}
	base := t.base
	if base == nil {
		base = http.DefaultTransport
	}
	resp, err := base.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		return resp, err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	if len(body) <= maxJWKSBytes {
		// A key jwx cannot parse (such as an RSA key under its minimum
		// size) is left out like any other unusable key, rather than
		// failing the whole document.
		if set, err := jwk.Parse(body, jwk.WithIgnoreParseError(true)); err == nil {
			if keys, err := signatureKeys(set, t.algs, false); err == nil {
				if b, err := json.Marshal(keys); err == nil {
					body = b
				}
			}
		}
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	resp.Header.Del("Content-Length")
	return resp, nil
}
