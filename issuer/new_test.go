package issuer_test

import (
	"context"
	"crypto"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/issuer"
)

// fakeSigner lets a test break one property of a valid signer.
type fakeSigner struct {
	issuer.Signer
	kid string
	alg jwa.SignatureAlgorithm
}

func (f fakeSigner) KeyID() string                     { return f.kid }
func (f fakeSigner) Algorithm() jwa.SignatureAlgorithm { return f.alg }

func publicJWK(t *testing.T, s issuer.Signer) jwk.Key {
	t.Helper()
	k, err := issuer.PublicJWK(s)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// staticKeys returns issuer.StaticKeys(signer, extra...) or fails the test.
func staticKeys(tb testing.TB, signer issuer.Signer, extra ...jwk.Key) issuer.KeySource {
	tb.Helper()
	keys, err := issuer.StaticKeys(signer, extra...)
	if err != nil {
		tb.Fatalf("StaticKeys: %v", err)
	}
	return keys
}

func TestNew(t *testing.T) {
	es := testSigner(t, jwa.ES256())

	type expected struct {
		issuerURL string
		ttl       time.Duration // exp - iat of a token minted with ttl 0
		kids      []string      // in KeySet
	}
	for _, tt := range []struct {
		name             string
		overrideConfig   func(*issuer.Config)
		overrideExpected func(*expected)
		expectErr        string
	}{
		{
			name: "baseline",
		},
		{
			name:             "DefaultTTL",
			overrideConfig:   func(c *issuer.Config) { c.DefaultTTL = time.Minute },
			overrideExpected: func(e *expected) { e.ttl = time.Minute },
		},
		{
			name:           "nil Clock uses time.Now",
			overrideConfig: func(c *issuer.Config) { c.Clock = nil },
		},
		{
			name:           "no IssuerURL",
			overrideConfig: func(c *issuer.Config) { c.IssuerURL = "" },
			expectErr:      `issuer: IssuerURL "" is required`,
		},
		{
			name:           "http IssuerURL",
			overrideConfig: func(c *issuer.Config) { c.IssuerURL = "http://sts.example.org" },
			expectErr:      `issuer: IssuerURL "http://sts.example.org" must be an https URL`,
		},
		{
			name:           "IssuerURL without host",
			overrideConfig: func(c *issuer.Config) { c.IssuerURL = "https:///path" },
			expectErr:      `issuer: IssuerURL "https:///path" must be an https URL`,
		},
		{
			name:           "relative IssuerURL",
			overrideConfig: func(c *issuer.Config) { c.IssuerURL = "sts.example.org" },
			expectErr:      `issuer: IssuerURL "sts.example.org" must be an https URL`,
		},
		{
			name:           "unparsable IssuerURL",
			overrideConfig: func(c *issuer.Config) { c.IssuerURL = "https://sts.example.org/%zz" },
			expectErr:      `issuer: IssuerURL "https://sts.example.org/%zz" is not a valid URL`,
		},
		{
			name:           "IssuerURL with user info",
			overrideConfig: func(c *issuer.Config) { c.IssuerURL = "https://user@sts.example.org" },
			expectErr:      `issuer: IssuerURL "https://user@sts.example.org" must not have user info, a query or a fragment`,
		},
		{
			name:           "IssuerURL with query",
			overrideConfig: func(c *issuer.Config) { c.IssuerURL = "https://sts.example.org?tenant=a" },
			expectErr:      `issuer: IssuerURL "https://sts.example.org?tenant=a" must not have user info, a query or a fragment`,
		},
		{
			name:           "IssuerURL with empty query",
			overrideConfig: func(c *issuer.Config) { c.IssuerURL = "https://sts.example.org?" },
			expectErr:      `issuer: IssuerURL "https://sts.example.org?" must not have user info, a query or a fragment`,
		},
		{
			name:           "IssuerURL with fragment",
			overrideConfig: func(c *issuer.Config) { c.IssuerURL = "https://sts.example.org#a" },
			expectErr:      `issuer: IssuerURL "https://sts.example.org#a" must not have user info, a query or a fragment`,
		},
		{
			// RFC 8414 §3 would put the well-known path before it, which
			// spiffe-sts does not serve (protocol.CheckIssuerURL).
			name:           "IssuerURL with path",
			overrideConfig: func(c *issuer.Config) { c.IssuerURL = "https://sts.example.org:8443/tenant" },
			expectErr:      `issuer: IssuerURL "https://sts.example.org:8443/tenant" must not have a path`,
		},
		{
			name:           "IssuerURL with trailing slash",
			overrideConfig: func(c *issuer.Config) { c.IssuerURL = "https://sts.example.org:8443/" },
			expectErr:      `issuer: IssuerURL "https://sts.example.org:8443/" must not end in a slash`,
		},
		{
			name:           "no Keys",
			overrideConfig: func(c *issuer.Config) { c.Keys = nil },
			expectErr:      "issuer: Keys is required",
		},
		{
			name:           "negative DefaultTTL",
			overrideConfig: func(c *issuer.Config) { c.DefaultTTL = -time.Second },
			expectErr:      "issuer: DefaultTTL must be positive, got -1s",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := issuer.Config{IssuerURL: testIssuerURL, Keys: staticKeys(t, es), Clock: fixedClock}
			if tt.overrideConfig != nil {
				tt.overrideConfig(&cfg)
			}
			want := expected{issuerURL: testIssuerURL, ttl: 5 * time.Minute, kids: []string{es.KeyID()}}
			if tt.overrideExpected != nil {
				tt.overrideExpected(&want)
			}

			iss, err := issuer.New(cfg)
			if tt.expectErr != "" {
				if err == nil || err.Error() != tt.expectErr {
					t.Fatalf("New error = %v, want %q", err, tt.expectErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("New: %v", err)
			}

			if got := iss.IssuerURL(); got != want.issuerURL {
				t.Errorf("IssuerURL() = %q, want %q", got, want.issuerURL)
			}
			keys := iss.KeySet()
			if keys.Len() != len(want.kids) {
				t.Errorf("KeySet().Len() = %d, want %d", keys.Len(), len(want.kids))
			}
			for _, kid := range want.kids {
				if _, err := keys.LookupKey(context.Background(), kid); err != nil {
					t.Errorf("KeySet lacks %q: %v", kid, err)
				}
			}

			before := time.Now().Unix()
			claims := baseClaims()
			if _, err := iss.Mint(context.Background(), &claims, newLeaf(t, testNow.Add(24*time.Hour)), 0); err != nil {
				t.Fatalf("Mint: %v", err)
			}
			if got := time.Duration(claims.Expiry-claims.IssuedAt) * time.Second; got != want.ttl {
				t.Errorf("token lifetime = %s, want %s", got, want.ttl)
			}
			if cfg.Clock == nil {
				if claims.IssuedAt < before || claims.IssuedAt > time.Now().Unix() {
					t.Errorf("iat = %d, want the current time %d", claims.IssuedAt, before)
				}
			} else if claims.IssuedAt != testNow.Unix() {
				t.Errorf("iat = %d, want %d", claims.IssuedAt, testNow.Unix())
			}
		})
	}
}

// TestStaticKeys checks the arguments of StaticKeys: the signer and the
// extra public keys published beside it.
func TestStaticKeys(t *testing.T) {
	es := testSigner(t, jwa.ES256())
	ed := testSigner(t, jwa.EdDSA())
	rs := testSigner(t, jwa.RS256())

	type params struct {
		signer issuer.Signer
		extra  []jwk.Key
	}
	for _, tt := range []struct {
		name             string
		overrideParams   func(*params)
		overrideExpected func(kids *[]string)
		expectErr        string
	}{
		{
			name: "baseline",
		},
		{
			name:             "extra keys are published",
			overrideParams:   func(p *params) { p.extra = []jwk.Key{publicJWK(t, ed), publicJWK(t, rs)} },
			overrideExpected: func(kids *[]string) { *kids = append(*kids, ed.KeyID(), rs.KeyID()) },
		},
		{
			name:           "the signer's own key in extra is published once",
			overrideParams: func(p *params) { p.extra = []jwk.Key{publicJWK(t, es)} },
		},
		{
			name:           "no signer",
			overrideParams: func(p *params) { p.signer = nil },
			expectErr:      "issuer: Signer is required",
		},
		{
			name:           "signer with unsupported algorithm",
			overrideParams: func(p *params) { p.signer = fakeSigner{Signer: es, kid: es.KeyID(), alg: jwa.HS256()} },
			expectErr:      `issuer: Signer algorithm "HS256" is not supported`,
		},
		{
			name:           "signer without key ID",
			overrideParams: func(p *params) { p.signer = fakeSigner{Signer: es, alg: jwa.ES256()} },
			expectErr:      "issuer: Signer has no key ID",
		},
		{
			name:           "nil extra key",
			overrideParams: func(p *params) { p.extra = []jwk.Key{publicJWK(t, ed), nil} },
			expectErr:      "issuer: extra[1] is nil",
		},
		{
			name: "extra key reusing the signer's kid",
			overrideParams: func(p *params) {
				k := publicJWK(t, ed)
				_ = k.Set(jwk.KeyIDKey, es.KeyID())
				p.extra = []jwk.Key{k}
			},
			expectErr: `issuer: extra[0] has the Signer's kid "` + es.KeyID() + `" but is a different key`,
		},
		{
			name: "extra key without alg",
			overrideParams: func(p *params) {
				k := publicJWK(t, ed)
				_ = k.Remove(jwk.AlgorithmKey)
				p.extra = []jwk.Key{k}
			},
			expectErr: `issuer: key set: accesstoken: key "` + ed.KeyID() + `" has no alg`,
		},
		{
			name: "extra key without kid",
			overrideParams: func(p *params) {
				k := publicJWK(t, ed)
				_ = k.Remove(jwk.KeyIDKey)
				p.extra = []jwk.Key{k}
			},
			expectErr: "issuer: key set: accesstoken: key 1 has no kid",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := params{signer: es}
			if tt.overrideParams != nil {
				tt.overrideParams(&p)
			}
			wantKIDs := []string{es.KeyID()}
			if tt.overrideExpected != nil {
				tt.overrideExpected(&wantKIDs)
			}

			keys, err := issuer.StaticKeys(p.signer, p.extra...)
			if tt.expectErr != "" {
				if err == nil || err.Error() != tt.expectErr {
					t.Fatalf("StaticKeys error = %v, want %q", err, tt.expectErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("StaticKeys: %v", err)
			}

			if got := keys.SigningKey(); got != p.signer {
				t.Errorf("SigningKey = %v, want the signer", got)
			}
			pub := keys.PublicKeys()
			if pub.Len() != len(wantKIDs) {
				t.Errorf("PublicKeys().Len() = %d, want %d", pub.Len(), len(wantKIDs))
			}
			for _, kid := range wantKIDs {
				if _, err := pub.LookupKey(context.Background(), kid); err != nil {
					t.Errorf("PublicKeys lacks %q: %v", kid, err)
				}
			}
		})
	}
}

// TestKeySetJWKS checks the JWKS document: public keys only, with kid, alg
// and use.
func TestKeySetJWKS(t *testing.T) {
	signer := testSigner(t, jwa.ES256())
	cfg := baseConfig(t)
	cfg.Keys = staticKeys(t, signer, publicJWK(t, testSigner(t, jwa.EdDSA())))
	iss, err := issuer.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := iss.KeySet().MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(doc), `"d"`) {
		t.Fatalf("JWKS contains private key material: %s", doc)
	}
	parsed, err := accesstoken.ParseStaticKeySet(doc)
	if err != nil {
		t.Fatalf("ParseStaticKeySet: %v", err)
	}
	if parsed.Len() != 2 {
		t.Fatalf("JWKS has %d keys, want 2", parsed.Len())
	}
	key, err := parsed.LookupKey(context.Background(), signer.KeyID())
	if err != nil {
		t.Fatal(err)
	}
	alg, _ := key.Algorithm()
	use, _ := key.KeyUsage()
	if alg.String() != jwa.ES256().String() || use != "sig" {
		t.Errorf("signer JWK alg %q use %q, want ES256 sig", alg, use)
	}
	var raw any
	if err := jwk.Export(key, &raw); err != nil {
		t.Fatal(err)
	}
	if !signer.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(raw) {
		t.Error("signer JWK does not hold the signer's public key")
	}
}
