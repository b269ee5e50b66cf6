package extissuer_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/exchange"
	"github.com/spiffe-sts/spiffe-sts/exchange/extissuer"
)

var _ exchange.ExternalIssuer = (*extissuer.Issuer)(nil)

const (
	testIssuer   = "https://idp.example.com"
	testAudience = "spiffe-sts"
	frontendID   = "spiffe://example.org/ns/shop/sa/frontend"
)

var testNow = time.Unix(1_700_000_000, 0)

// rsaKeys caches generated RSA keys by size: generating them is slow.
var rsaKeys = struct {
	sync.Mutex
	m map[string]*rsa.PrivateKey
}{m: map[string]*rsa.PrivateKey{}}

func rsaKey(t *testing.T, name string, bits int) *rsa.PrivateKey {
	t.Helper()
	rsaKeys.Lock()
	defer rsaKeys.Unlock()
	if k, ok := rsaKeys.m[name]; ok {
		return k
	}
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	rsaKeys.m[name] = k
	return k
}

// privateJWK wraps raw as a JWK with kid and, unless alg is empty, alg.
func privateJWK(t *testing.T, raw any, kid string, alg jwa.SignatureAlgorithm) jwk.Key {
	t.Helper()
	key, err := jwk.Import(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := key.Set(jwk.KeyIDKey, kid); err != nil {
		t.Fatal(err)
	}
	if alg != jwa.EmptySignatureAlgorithm() {
		if err := key.Set(jwk.AlgorithmKey, alg); err != nil {
			t.Fatal(err)
		}
	}
	return key
}

func newECKey(t *testing.T, curve elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// jwksDoc is the JWKS document of the public parts of keys.
func jwksDoc(t *testing.T, keys ...jwk.Key) []byte {
	t.Helper()
	set := jwk.NewSet()
	for _, k := range keys {
		pub, err := jwk.PublicKeyOf(k)
		if err != nil {
			t.Fatal(err)
		}
		if err := set.AddKey(pub); err != nil {
			t.Fatal(err)
		}
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// jwksServer is an issuer's JWKS endpoint whose document can change.
type jwksServer struct {
	*httptest.Server
	doc     atomic.Pointer[[]byte]
	fetches atomic.Int32
}

func startJWKSServer(t *testing.T, doc []byte) *jwksServer {
	t.Helper()
	s := new(jwksServer)
	s.doc.Store(&doc)
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		s.fetches.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(*s.doc.Load())
	}))
	s.Config.ErrorLog = log.New(io.Discard, "", 0) // handshakes that tests make fail
	s.StartTLS()
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) set(doc []byte) { s.doc.Store(&doc) }

// sign returns a JWS compact serialization of claims signed with key.
func sign(t *testing.T, claims map[string]any, key any, alg jwa.SignatureAlgorithm, hdr map[string]any) string {
	t.Helper()
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	h := jws.NewHeaders()
	for k, v := range hdr {
		if err := h.Set(k, v); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := jws.Sign(payload, jws.WithKey(alg, key, jws.WithProtectedHeaders(h)))
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}

// unsigned returns an "alg": "none" token with the given signature part.
func unsigned(t *testing.T, claims map[string]any, kid, sig string) string {
	t.Helper()
	hdr, _ := json.Marshal(map[string]string{"alg": "none", "kid": kid, "typ": "JWT"})
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	return enc(hdr) + "." + enc(payload) + "." + sig
}

// signParams is how a test token is made.
type signParams struct {
	key any // a jwk.Key or, for HMAC, []byte
	alg jwa.SignatureAlgorithm
	hdr map[string]any
	// raw replaces the signed token when set.
	raw func(t *testing.T, claims map[string]any) string
}

func TestVerify(t *testing.T) {
	rsa1 := privateJWK(t, rsaKey(t, "rsa1", 2048), "rsa-1", jwa.RS256())
	rsa2 := privateJWK(t, rsaKey(t, "rsa2", 2048), "rsa-2", jwa.RS256())
	ec1 := privateJWK(t, newECKey(t, elliptic.P256()), "ec-1", jwa.ES256())
	// other has ec-1's kid but is another key.
	other := privateJWK(t, newECKey(t, elliptic.P256()), "ec-1", jwa.ES256())
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: mustMarshalPKIX(t, &rsaKey(t, "rsa1", 2048).PublicKey)})

	baselineClaims := func() map[string]any {
		return map[string]any{
			"iss":   testIssuer,
			"sub":   "alice@example.com",
			"aud":   []string{testAudience, "https://app.example.com"},
			"exp":   testNow.Add(5 * time.Minute).Unix(),
			"iat":   testNow.Add(-time.Minute).Unix(),
			"nbf":   testNow.Add(-time.Minute).Unix(),
			"jti":   "token-1",
			"email": "alice@example.com",
		}
	}
	baselineExpected := func() *accesstoken.Claims {
		return &accesstoken.Claims{
			Issuer:    testIssuer,
			Subject:   "alice@example.com",
			Audience:  accesstoken.Audience{testAudience, "https://app.example.com"},
			Expiry:    testNow.Add(5 * time.Minute).Unix(),
			IssuedAt:  testNow.Add(-time.Minute).Unix(),
			NotBefore: testNow.Add(-time.Minute).Unix(),
			JWTID:     "token-1",
		}
	}

	for _, tc := range []struct {
		name             string
		overrideConfig   func(t *testing.T, c *extissuer.Config)
		overrideParams   func(p *signParams)
		overrideClaims   func(c map[string]any)
		overrideServer   func(s *jwksServer) // after New
		overrideExpected func(c *accesstoken.Claims)
		// expectErr is the exact error; expectErrIs and expectErrContains
		// check errors that wrap text of the JWS library.
		expectErr         string
		expectErrIs       []error
		expectErrContains string
	}{
		{
			name: "baseline",
		},
		{
			name:           "ES256 key",
			overrideParams: func(p *signParams) { p.key, p.alg = ec1, jwa.ES256() },
		},
		{
			name: "JWKS from a file",
			overrideConfig: func(t *testing.T, c *extissuer.Config) {
				c.JWKSURL, c.HTTPClient = "", nil
				c.JWKS = parseSet(t, jwksDoc(t, rsa1, ec1))
			},
		},
		{
			name:              "signature by another key",
			overrideParams:    func(p *signParams) { p.key, p.alg = other, jwa.ES256() },
			expectErrIs:       []error{extissuer.ErrSignature},
			expectErrContains: "could not verify message",
		},
		{
			name:              "unknown kid",
			overrideParams:    func(p *signParams) { p.key = rsa2 },
			expectErrIs:       []error{extissuer.ErrSignature, accesstoken.ErrUnknownKey},
			expectErrContains: `"rsa-2"`,
		},
		{
			name:           "unknown kid after rotation",
			overrideParams: func(p *signParams) { p.key = rsa2 },
			overrideServer: func(s *jwksServer) { s.set(jwksDoc(t, rsa2, ec1)) },
		},
		{
			name:              "no kid",
			overrideParams:    func(p *signParams) { p.hdr = map[string]any{"typ": "JWT"}; p.key = rsaWithoutKID(t) },
			expectErrIs:       []error{extissuer.ErrSignature},
			expectErrContains: "token has no kid",
		},
		{
			name: "alg none",
			overrideParams: func(p *signParams) {
				p.raw = func(t *testing.T, c map[string]any) string { return unsigned(t, c, "rsa-1", "AAAA") }
			},
			expectErrIs:       []error{extissuer.ErrSignature},
			expectErrContains: `algorithm not accepted: "none"`,
		},
		{
			name: "unsigned JWT",
			overrideParams: func(p *signParams) {
				p.raw = func(t *testing.T, c map[string]any) string { return unsigned(t, c, "rsa-1", "") }
			},
			expectErr: "extissuer: malformed token: not a JWS compact serialization",
		},
		{
			name: "JWS JSON serialization",
			overrideParams: func(p *signParams) {
				p.raw = func(t *testing.T, c map[string]any) string {
					compact := sign(t, c, rsa1, jwa.RS256(), nil)
					parts := strings.Split(compact, ".")
					b, _ := json.Marshal(map[string]string{"protected": parts[0], "payload": parts[1], "signature": parts[2]})
					return string(b)
				}
			},
			expectErr: "extissuer: malformed token: not a JWS compact serialization",
		},
		{
			name: "HS256 with the public key as secret",
			overrideParams: func(p *signParams) {
				p.key, p.alg, p.hdr = pubPEM, jwa.HS256(), map[string]any{"kid": "rsa-1", "typ": "JWT"}
			},
			overrideConfig:    func(_ *testing.T, c *extissuer.Config) { c.Algorithms = []jwa.SignatureAlgorithm{jwa.RS256()} },
			expectErrIs:       []error{extissuer.ErrSignature},
			expectErrContains: `algorithm not accepted: "HS256"`,
		},
		{
			name:              "disallowed algorithm",
			overrideConfig:    func(_ *testing.T, c *extissuer.Config) { c.Algorithms = []jwa.SignatureAlgorithm{jwa.ES256()} },
			expectErrIs:       []error{extissuer.ErrSignature},
			expectErrContains: `algorithm not accepted: "RS256"`,
		},
		{
			name: "algorithm other than the key's",
			overrideConfig: func(_ *testing.T, c *extissuer.Config) {
				c.Algorithms = []jwa.SignatureAlgorithm{jwa.RS256(), jwa.PS256()}
			},
			overrideParams:    func(p *signParams) { p.alg = jwa.PS256() },
			expectErrIs:       []error{extissuer.ErrSignature},
			expectErrContains: `algorithm not accepted: "PS256", key "rsa-1" has "RS256"`,
		},
		{
			name:           "wrong issuer",
			overrideClaims: func(c map[string]any) { c["iss"] = "https://evil.example.com" },
			expectErr:      `extissuer: wrong issuer: "https://evil.example.com"`,
		},
		{
			name:           "issuer with a trailing slash",
			overrideClaims: func(c map[string]any) { c["iss"] = testIssuer + "/" },
			expectErr:      `extissuer: wrong issuer: "https://idp.example.com/"`,
		},
		{
			name:           "wrong audience",
			overrideClaims: func(c map[string]any) { c["aud"] = "https://app.example.com" },
			expectErr:      `extissuer: audience not accepted: token is for ["https://app.example.com"]`,
		},
		{
			name:           "no audience",
			overrideClaims: func(c map[string]any) { delete(c, "aud") },
			expectErr:      `extissuer: audience not accepted: token is for []`,
		},
		{
			name:             "audience as a string",
			overrideClaims:   func(c map[string]any) { c["aud"] = testAudience },
			overrideExpected: func(c *accesstoken.Claims) { c.Audience = accesstoken.Audience{testAudience} },
		},
		{
			name:           "expired",
			overrideClaims: func(c map[string]any) { c["exp"] = testNow.Unix() },
			expectErr:      "extissuer: token expired at 2023-11-14T22:13:20Z",
		},
		{
			name:           "expired within the leeway",
			overrideConfig: func(_ *testing.T, c *extissuer.Config) { c.Leeway = 30 * time.Second },
			overrideClaims: func(c map[string]any) { c["exp"] = testNow.Add(-29 * time.Second).Unix() },
			overrideExpected: func(c *accesstoken.Claims) {
				c.Expiry = testNow.Add(-29 * time.Second).Unix()
			},
		},
		{
			name:           "expired beyond the leeway",
			overrideConfig: func(_ *testing.T, c *extissuer.Config) { c.Leeway = 30 * time.Second },
			overrideClaims: func(c map[string]any) { c["exp"] = testNow.Add(-30 * time.Second).Unix() },
			expectErr:      "extissuer: token expired at 2023-11-14T22:12:50Z",
		},
		{
			name:           "no exp",
			overrideClaims: func(c map[string]any) { delete(c, "exp") },
			expectErr:      "extissuer: malformed token: no exp",
		},
		{
			name:           "fractional exp",
			overrideClaims: func(c map[string]any) { c["exp"] = float64(testNow.Unix()) + 60.75 },
			overrideExpected: func(c *accesstoken.Claims) {
				c.Expiry = testNow.Unix() + 60
			},
		},
		{
			name:           "exp as a string",
			overrideClaims: func(c map[string]any) { c["exp"] = "1700000300" },
			expectErr:      "extissuer: malformed token: claims: invalid NumericDate",
		},
		{
			name:           "not yet valid",
			overrideClaims: func(c map[string]any) { c["nbf"] = testNow.Add(time.Second).Unix() },
			expectErr:      "extissuer: token not yet valid: nbf is 2023-11-14T22:13:21Z",
		},
		{
			name:           "nbf within the leeway",
			overrideConfig: func(_ *testing.T, c *extissuer.Config) { c.Leeway = 30 * time.Second },
			overrideClaims: func(c map[string]any) { c["nbf"] = testNow.Add(30 * time.Second).Unix() },
			overrideExpected: func(c *accesstoken.Claims) {
				c.NotBefore = testNow.Add(30 * time.Second).Unix()
			},
		},
		{
			name:           "issued in the future",
			overrideClaims: func(c map[string]any) { c["iat"] = testNow.Add(time.Minute).Unix() },
			expectErr:      "extissuer: token not yet valid: iat is 2023-11-14T22:14:20Z",
		},
		{
			name: "no nbf and no iat",
			overrideClaims: func(c map[string]any) {
				delete(c, "nbf")
				delete(c, "iat")
			},
			overrideExpected: func(c *accesstoken.Claims) { c.NotBefore, c.IssuedAt = 0, 0 },
		},
		{
			name:           "missing sub",
			overrideClaims: func(c map[string]any) { delete(c, "sub") },
			expectErr:      "extissuer: malformed token: no sub",
		},
		{
			name:           "sub not a string",
			overrideClaims: func(c map[string]any) { c["sub"] = 42 },
			expectErr:      "extissuer: malformed token: claims: json: cannot unmarshal number into Go struct field tokenClaims.sub of type string",
		},
		{
			name:             "scope",
			overrideClaims:   func(c map[string]any) { c["scope"] = "orders:read  profile" },
			overrideExpected: func(c *accesstoken.Claims) { c.Scope = "orders:read profile" },
		},
		{
			name:             "scp array",
			overrideClaims:   func(c map[string]any) { c["scp"] = []string{"orders:read", "profile"} },
			overrideExpected: func(c *accesstoken.Claims) { c.Scope = "orders:read profile" },
		},
		{
			name:             "scp string",
			overrideClaims:   func(c map[string]any) { c["scp"] = "orders:read profile" },
			overrideExpected: func(c *accesstoken.Claims) { c.Scope = "orders:read profile" },
		},
		{
			name: "scope wins over scp",
			overrideClaims: func(c map[string]any) {
				c["scope"] = "orders:read"
				c["scp"] = []string{"admin"}
			},
			overrideExpected: func(c *accesstoken.Claims) { c.Scope = "orders:read" },
		},
		{
			name:           "scp entry with a space",
			overrideClaims: func(c map[string]any) { c["scp"] = []string{"orders:read admin"} },
			expectErr:      `extissuer: malformed token: claims: scope "orders:read admin" contains ' ', which RFC 6749 §3.3 does not allow`,
		},
		{
			name:           "scope of the wrong type",
			overrideClaims: func(c map[string]any) { c["scope"] = 7 },
			expectErr:      "extissuer: malformed token: claims: scope is neither a string nor an array of strings",
		},
		{
			name: "act and may_act",
			overrideClaims: func(c map[string]any) {
				c["act"] = map[string]any{
					"sub": "spiffe://example.org/ns/shop/sa/gateway",
					"iss": "https://sts.example.org",
					"act": map[string]any{"sub": "spiffe://example.org/ns/edge/sa/proxy"},
				}
				c["may_act"] = map[string]any{"sub": frontendID}
			},
			overrideExpected: func(c *accesstoken.Claims) {
				c.Actor = &accesstoken.Actor{
					Subject: "spiffe://example.org/ns/shop/sa/gateway",
					Actor:   &accesstoken.Actor{Subject: "spiffe://example.org/ns/edge/sa/proxy"},
				}
				c.MayAct = &accesstoken.Actor{Subject: frontendID}
			},
		},
		{
			name:           "act without sub",
			overrideClaims: func(c map[string]any) { c["act"] = map[string]any{"act": map[string]any{"sub": frontendID}} },
			expectErr:      "extissuer: malformed token: act has no sub",
		},
		{
			name: "nested act without sub",
			overrideClaims: func(c map[string]any) {
				c["act"] = map[string]any{"sub": frontendID, "act": map[string]any{"client_id": "x"}}
			},
			expectErr: "extissuer: malformed token: act.act has no sub",
		},
		{
			name: "act nested too deep",
			overrideClaims: func(c map[string]any) {
				act := map[string]any{"sub": "x"}
				for range 32 {
					act = map[string]any{"sub": "x", "act": act}
				}
				c["act"] = act
			},
			expectErr: "extissuer: malformed token: act nested more than 32 deep",
		},
		{
			name:           "may_act without sub",
			overrideClaims: func(c map[string]any) { c["may_act"] = map[string]any{"client_id": frontendID} },
			expectErr:      "extissuer: malformed token: may_act has no sub",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startJWKSServer(t, jwksDoc(t, rsa1, ec1))
			cfg := extissuer.Config{
				Name:       "corp",
				Issuer:     testIssuer,
				JWKSURL:    srv.URL + "/jwks",
				HTTPClient: srv.Client(),
				Audience:   testAudience,
				Now:        func() time.Time { return testNow },
			}
			if tc.overrideConfig != nil {
				tc.overrideConfig(t, &cfg)
			}
			params := signParams{key: rsa1, alg: jwa.RS256()}
			if tc.overrideParams != nil {
				tc.overrideParams(&params)
			}
			if params.hdr == nil {
				params.hdr = map[string]any{"typ": "JWT"}
			}
			claims := baselineClaims()
			if tc.overrideClaims != nil {
				tc.overrideClaims(claims)
			}
			expected := baselineExpected()
			if tc.overrideExpected != nil {
				tc.overrideExpected(expected)
			}

			iss, err := extissuer.New(context.Background(), cfg)
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			if iss.Name() != "corp" || iss.Issuer() != testIssuer {
				t.Fatalf("Name, Issuer = %q, %q", iss.Name(), iss.Issuer())
			}
			if tc.overrideServer != nil {
				tc.overrideServer(srv)
			}
			var raw string
			if params.raw != nil {
				raw = params.raw(t, claims)
			} else {
				raw = sign(t, claims, params.key, params.alg, params.hdr)
			}

			got, err := iss.Verify(context.Background(), raw)
			if tc.expectErr == "" && tc.expectErrIs == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if !reflect.DeepEqual(got, expected) {
					t.Fatalf("Verify:\n%+v\nwant:\n%+v", got, expected)
				}
				return
			}
			if err == nil {
				t.Fatal("Verify succeeded, want an error")
			}
			if tc.expectErr != "" && err.Error() != tc.expectErr {
				t.Fatalf("Verify error:\n%s\nwant:\n%s", err, tc.expectErr)
			}
			for _, target := range tc.expectErrIs {
				if !errors.Is(err, target) {
					t.Errorf("Verify error %q is not %q", err, target)
				}
			}
			if !strings.Contains(err.Error(), tc.expectErrContains) {
				t.Errorf("Verify error %q does not contain %q", err, tc.expectErrContains)
			}
			for _, part := range strings.Split(raw, ".") {
				if len(part) > 8 && strings.Contains(err.Error(), part) {
					t.Errorf("Verify error contains part of the token: %s", err)
				}
			}
		})
	}
}

// weakRSAKey is a public JWK of a 1024-bit RSA key with kid and RS256,
// which jwk.Import and jwk.Parse refuse to make.
func weakRSAKey(t *testing.T, kid string) jwk.Key {
	key := privateJWK(t, &rsaKey(t, "rsa1", 2048).PublicKey, kid, jwa.RS256())
	if err := key.Set(jwk.RSANKey, rsaKey(t, "rsa1024", 1024).N.Bytes()); err != nil {
		t.Fatal(err)
	}
	return key
}

// rsaWithoutKID is a signing key whose tokens carry no kid.
func rsaWithoutKID(t *testing.T) jwk.Key {
	key, err := jwk.Import(rsaKey(t, "rsa1", 2048))
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func mustMarshalPKIX(t *testing.T, pub any) []byte {
	t.Helper()
	b, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// parseSet parses a JWKS document, as the caller of New does.
func parseSet(t *testing.T, doc []byte) jwk.Set {
	t.Helper()
	set, err := jwk.Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// TestKeysWithoutAlg checks how keys without "alg" get one.
func TestKeysWithoutAlg(t *testing.T) {
	rsaNoAlg := privateJWK(t, rsaKey(t, "rsa1", 2048), "rsa-1", jwa.EmptySignatureAlgorithm())
	ecNoAlg := privateJWK(t, newECKey(t, elliptic.P384()), "ec-384", jwa.EmptySignatureAlgorithm())
	_, edRaw, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edNoAlg := privateJWK(t, edRaw, "ed-1", jwa.EmptySignatureAlgorithm())
	claims := map[string]any{"iss": testIssuer, "sub": "alice", "aud": testAudience, "exp": testNow.Add(time.Minute).Unix()}

	for _, tc := range []struct {
		name      string
		algs      []jwa.SignatureAlgorithm
		key       jwk.Key
		alg       jwa.SignatureAlgorithm
		expectErr string // for the JWKS URL
		// expectFileErr is New's error for the same keys given as JWKS;
		// the URL's when empty.
		expectFileErr string
	}{
		{name: "RSA under the default algorithms", key: rsaNoAlg, alg: jwa.RS256()},
		{name: "P-384", algs: []jwa.SignatureAlgorithm{jwa.RS256(), jwa.ES384()}, key: ecNoAlg, alg: jwa.ES384()},
		{name: "Ed25519", algs: []jwa.SignatureAlgorithm{jwa.EdDSA(), jwa.ES256()}, key: edNoAlg, alg: jwa.EdDSA()},
		{
			name:          "RSA with two RSA algorithms",
			algs:          []jwa.SignatureAlgorithm{jwa.RS256(), jwa.PS256()},
			key:           rsaNoAlg,
			expectErr:     "extissuer: corp: accesstoken: fetched JWKS has no keys",
			expectFileErr: `extissuer: corp: JWKS: key 0: "rsa-1" has no alg, and 2 of the accepted algorithms fit it (want exactly 1)`,
		},
		{
			name:          "P-384 under the default algorithms",
			key:           ecNoAlg,
			expectErr:     "extissuer: corp: accesstoken: fetched JWKS has no keys",
			expectFileErr: `extissuer: corp: JWKS: key 0: "ec-384" has no alg, and 0 of the accepted algorithms fit it (want exactly 1)`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := jwksDoc(t, tc.key)
			srv := startJWKSServer(t, doc)
			for _, src := range []string{"url", "file"} {
				cfg := extissuer.Config{
					Name: "corp", Issuer: testIssuer, Audience: testAudience, Algorithms: tc.algs,
					Now: func() time.Time { return testNow },
				}
				expectErr := tc.expectErr
				if src == "url" {
					cfg.JWKSURL, cfg.HTTPClient = srv.URL, srv.Client()
				} else {
					cfg.JWKS = parseSet(t, doc)
					if tc.expectFileErr != "" {
						expectErr = tc.expectFileErr
					}
				}
				iss, err := extissuer.New(context.Background(), cfg)
				if expectErr != "" {
					if err == nil || err.Error() != expectErr {
						t.Fatalf("%s: New: %v, want %s", src, err, expectErr)
					}
					continue
				}
				if err != nil {
					t.Fatalf("%s: New: %v", src, err)
				}
				if _, err := iss.Verify(context.Background(), sign(t, claims, tc.key, tc.alg, nil)); err != nil {
					t.Fatalf("%s: Verify: %v", src, err)
				}
			}
		})
	}
}

// TestUnusableKeys checks that a JWKS URL's unusable keys are left out and
// fixed JWKS's are errors.
func TestUnusableKeys(t *testing.T) {
	good := privateJWK(t, newECKey(t, elliptic.P256()), "ec-1", jwa.ES256())
	weak := weakRSAKey(t, "rsa-weak")
	noKID := privateJWK(t, newECKey(t, elliptic.P256()), "", jwa.ES256())
	dupKID := privateJWK(t, newECKey(t, elliptic.P256()), "ec-1", jwa.ES256())
	encKey := privateJWK(t, newECKey(t, elliptic.P256()), "ec-enc", jwa.EmptySignatureAlgorithm())
	if err := encKey.Set(jwk.KeyUsageKey, jwk.ForEncryption); err != nil {
		t.Fatal(err)
	}
	secret, err := jwk.Import([]byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	_ = secret.Set(jwk.KeyIDKey, "hmac")
	_ = secret.Set(jwk.AlgorithmKey, jwa.HS256())
	claims := map[string]any{"iss": testIssuer, "sub": "alice", "aud": testAudience, "exp": testNow.Add(time.Minute).Unix()}

	for _, tc := range []struct {
		name          string
		bad           jwk.Key
		expectFileErr string
	}{
		{name: "RSA key under 2048 bits", bad: weak, expectFileErr: `key 1: "rsa-weak": RSA key of 1024 bits, want at least 2048`},
		{name: "no kid", bad: noKID, expectFileErr: "key 1: no kid"},
		{name: "encryption key", bad: encKey},
		{name: "duplicate kid", bad: dupKID, expectFileErr: `key 1: "ec-1": another key has the same kid`},
		{name: "symmetric key", bad: secret, expectFileErr: `key 1: "hmac" is a symmetric key`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			set := jwk.NewSet()
			for _, k := range []jwk.Key{good, tc.bad} {
				if k.KeyType() != jwa.OctetSeq() {
					k, _ = jwk.PublicKeyOf(k)
				}
				if err := set.AddKey(k); err != nil {
					t.Fatal(err)
				}
			}
			doc, err := json.Marshal(set)
			if err != nil {
				t.Fatal(err)
			}
			srv := startJWKSServer(t, doc)
			iss, err := extissuer.New(context.Background(), extissuer.Config{
				Name: "corp", Issuer: testIssuer, Audience: testAudience,
				JWKSURL: srv.URL, HTTPClient: srv.Client(),
				Now: func() time.Time { return testNow },
			})
			if err != nil {
				t.Fatalf("New with a JWKS URL: %v", err)
			}
			if _, err := iss.Verify(context.Background(), sign(t, claims, good, jwa.ES256(), nil)); err != nil {
				t.Fatalf("Verify: %v", err)
			}

			_, err = extissuer.New(context.Background(), extissuer.Config{
				Name: "corp", Issuer: testIssuer, Audience: testAudience, JWKS: set,
			})
			if tc.expectFileErr == "" {
				if err != nil {
					t.Fatalf("New with JWKS: %v", err)
				}
				return
			}
			want := "extissuer: corp: JWKS: " + tc.expectFileErr
			if err == nil || err.Error() != want {
				t.Fatalf("New with JWKS: %v, want %s", err, want)
			}
		})
	}
}

func TestNew(t *testing.T) {
	srv := startJWKSServer(t, jwksDoc(t, privateJWK(t, newECKey(t, elliptic.P256()), "ec-1", jwa.ES256())))
	down := httptest.NewTLSServer(http.NotFoundHandler())
	downURL := down.URL
	down.Close()

	for _, tc := range []struct {
		name           string
		overrideConfig func(t *testing.T, c *extissuer.Config)
		expectErr      string // exact
		expectPrefix   string // for errors with text of net/http
	}{
		{name: "baseline"},
		{name: "no name", overrideConfig: func(_ *testing.T, c *extissuer.Config) { c.Name = "" }, expectErr: "extissuer: Name is required"},
		{name: "no audience", overrideConfig: func(_ *testing.T, c *extissuer.Config) { c.Audience = "" }, expectErr: "extissuer: corp: Audience is required"},
		{name: "no issuer", overrideConfig: func(_ *testing.T, c *extissuer.Config) { c.Issuer = "" }, expectErr: "extissuer: corp: Issuer: is required"},
		{
			name:           "http issuer",
			overrideConfig: func(_ *testing.T, c *extissuer.Config) { c.Issuer = "http://idp.example.com" },
			expectErr:      `extissuer: corp: Issuer: "http://idp.example.com" is not an https URL`,
		},
		{
			name:           "issuer with a query",
			overrideConfig: func(_ *testing.T, c *extissuer.Config) { c.Issuer = "https://idp.example.com?tenant=1" },
			expectErr:      `extissuer: corp: Issuer: "https://idp.example.com?tenant=1" must not have user info, a query or a fragment`,
		},
		{
			name:           "issuer with a path",
			overrideConfig: func(_ *testing.T, c *extissuer.Config) { c.Issuer = "https://login.example.com/tenant/v2.0/" },
		},
		{
			name:           "both JWKS URL and JWKS",
			overrideConfig: func(_ *testing.T, c *extissuer.Config) { c.JWKS = jwk.NewSet() },
			expectErr:      "extissuer: corp: exactly one of JWKSURL and JWKS is required",
		},
		{
			name:           "neither JWKS URL nor JWKS",
			overrideConfig: func(_ *testing.T, c *extissuer.Config) { c.JWKSURL = "" },
			expectErr:      "extissuer: corp: exactly one of JWKSURL and JWKS is required",
		},
		{
			name:           "http JWKS URL",
			overrideConfig: func(_ *testing.T, c *extissuer.Config) { c.JWKSURL = "http://idp.example.com/jwks" },
			expectErr:      `extissuer: corp: JWKSURL: "http://idp.example.com/jwks" is not an https URL`,
		},
		{
			name:           "no HTTP client",
			overrideConfig: func(_ *testing.T, c *extissuer.Config) { c.HTTPClient = nil },
			expectErr:      "extissuer: corp: HTTPClient is required with JWKSURL",
		},
		{
			name:           "negative leeway",
			overrideConfig: func(_ *testing.T, c *extissuer.Config) { c.Leeway = -time.Second },
			expectErr:      "extissuer: corp: Leeway must not be negative",
		},
		{
			name: "HS256",
			overrideConfig: func(_ *testing.T, c *extissuer.Config) {
				c.Algorithms = []jwa.SignatureAlgorithm{jwa.ES256(), jwa.HS256()}
			},
			expectErr: `extissuer: corp: Algorithms: extissuer: unsupported signature algorithm "HS256" (want one of RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA)`,
		},
		{
			name:           "JWKS server down",
			overrideConfig: func(_ *testing.T, c *extissuer.Config) { c.JWKSURL = downURL + "/jwks" },
			expectPrefix:   `extissuer: corp: accesstoken: fetch JWKS: Get "` + downURL + `/jwks": `,
		},
		{
			name: "JWKS server not trusted",
			overrideConfig: func(_ *testing.T, c *extissuer.Config) {
				c.HTTPClient = &http.Client{Transport: &http.Transport{}}
			},
			expectPrefix: `extissuer: corp: accesstoken: fetch JWKS: Get "` + srv.URL + `/jwks": tls: failed to verify certificate`,
		},
		{
			name: "JWKS not found",
			overrideConfig: func(_ *testing.T, c *extissuer.Config) {
				nf := httptest.NewTLSServer(http.NotFoundHandler())
				t.Cleanup(nf.Close)
				c.JWKSURL, c.HTTPClient = nf.URL, nf.Client()
			},
			expectErr: "extissuer: corp: accesstoken: fetch JWKS: 404 Not Found",
		},
		{
			name: "redirect to http",
			overrideConfig: func(_ *testing.T, c *extissuer.Config) {
				rd := httptest.NewTLSServer(http.RedirectHandler("http://127.0.0.1:1/jwks", http.StatusFound))
				t.Cleanup(rd.Close)
				c.JWKSURL, c.HTTPClient = rd.URL, rd.Client()
			},
			expectErr: `extissuer: corp: accesstoken: fetch JWKS: Get "http://127.0.0.1:1/jwks": extissuer: JWKS request to http://127.0.0.1:1/jwks is not https`,
		},
		{
			name: "JWKS without a key for the algorithms",
			overrideConfig: func(t *testing.T, c *extissuer.Config) {
				c.JWKSURL, c.HTTPClient = "", nil
				c.JWKS = parseSet(t, jwksDoc(t, privateJWK(t, newECKey(t, elliptic.P256()), "ec-1", jwa.ES256())))
				c.Algorithms = []jwa.SignatureAlgorithm{jwa.RS256(), jwa.PS256()}
			},
			expectErr: "extissuer: corp: JWKS: no key for the accepted algorithms (RS256, PS256)",
		},
		{
			name: "JWKS without keys",
			overrideConfig: func(t *testing.T, c *extissuer.Config) {
				c.JWKSURL, c.HTTPClient = "", nil
				c.JWKS = jwk.NewSet()
			},
			expectErr: "extissuer: corp: JWKS: no key for the accepted algorithms (RS256, ES256)",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := extissuer.Config{
				Name:       "corp",
				Issuer:     testIssuer,
				JWKSURL:    srv.URL + "/jwks",
				HTTPClient: srv.Client(),
				Audience:   testAudience,
			}
			if tc.overrideConfig != nil {
				tc.overrideConfig(t, &cfg)
			}
			_, err := extissuer.New(context.Background(), cfg)
			switch {
			case tc.expectErr == "" && tc.expectPrefix == "":
				if err != nil {
					t.Fatalf("New: %v", err)
				}
			case err == nil:
				t.Fatal("New succeeded, want an error")
			case tc.expectErr != "":
				if err.Error() != tc.expectErr {
					t.Fatalf("New error:\n%s\nwant:\n%s", err, tc.expectErr)
				}
			case !strings.HasPrefix(err.Error(), tc.expectPrefix):
				t.Fatalf("New error:\n%s\nwant prefix:\n%s", err, tc.expectPrefix)
			}
		})
	}
}

func TestNewStopsWithContext(t *testing.T) {
	block := make(chan struct{})
	srv := httptest.NewTLSServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-block }))
	defer srv.Close()
	defer close(block)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := extissuer.New(ctx, extissuer.Config{
		Name: "corp", Issuer: testIssuer, Audience: testAudience,
		JWKSURL: srv.URL, HTTPClient: srv.Client(),
	})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("New: %v, want %v", err, context.DeadlineExceeded)
	}
}

// TestRefetchIsRateLimited checks that tokens naming unknown keys do not
// make the issuer fetch the JWKS on every call.
func TestRefetchIsRateLimited(t *testing.T) {
	ec1 := privateJWK(t, newECKey(t, elliptic.P256()), "ec-1", jwa.ES256())
	srv := startJWKSServer(t, jwksDoc(t, ec1))
	iss, err := extissuer.New(context.Background(), extissuer.Config{
		Name: "corp", Issuer: testIssuer, Audience: testAudience,
		JWKSURL: srv.URL, HTTPClient: srv.Client(),
		Now: func() time.Time { return testNow },
	})
	if err != nil {
		t.Fatal(err)
	}
	claims := map[string]any{"iss": testIssuer, "sub": "alice", "aud": testAudience, "exp": testNow.Add(time.Minute).Unix()}
	for i := range 5 {
		unknown := privateJWK(t, newECKey(t, elliptic.P256()), "unknown", jwa.ES256())
		if _, err := iss.Verify(context.Background(), sign(t, claims, unknown, jwa.ES256(), nil)); !errors.Is(err, accesstoken.ErrUnknownKey) {
			t.Fatalf("Verify %d: %v, want %v", i, err, accesstoken.ErrUnknownKey)
		}
	}
	if n := srv.fetches.Load(); n != 2 {
		t.Fatalf("%d JWKS fetches, want 2 (New, then one refetch)", n)
	}
}
