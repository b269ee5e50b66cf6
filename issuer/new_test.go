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

func TestNew(t *testing.T) {
	es := testSigner(t, jwa.ES256())
	ed := testSigner(t, jwa.EdDSA())
	rs := testSigner(t, jwa.RS256())

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
			name: "VerificationKeys are published",
			overrideConfig: func(c *issuer.Config) {
				c.VerificationKeys = []jwk.Key{publicJWK(t, ed), publicJWK(t, rs)}
			},
			overrideExpected: func(e *expected) { e.kids = append(e.kids, ed.KeyID(), rs.KeyID()) },
		},
		{
			name: "the Signer's own key in VerificationKeys is published once",
			overrideConfig: func(c *issuer.Config) {
				c.VerificationKeys = []jwk.Key{publicJWK(t, es)}
			},
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
			name:           "no Signer",
			overrideConfig: func(c *issuer.Config) { c.Signer = nil },
			expectErr:      "issuer: Signer is required",
		},
		{
			name: "Signer with unsupported algorithm",
			overrideConfig: func(c *issuer.Config) {
				c.Signer = fakeSigner{Signer: es, kid: es.KeyID(), alg: jwa.HS256()}
			},
			expectErr: `issuer: Signer algorithm "HS256" is not supported`,
		},
		{
			name: "Signer without key ID",
			overrideConfig: func(c *issuer.Config) {
				c.Signer = fakeSigner{Signer: es, alg: jwa.ES256()}
			},
			expectErr: "issuer: Signer has no key ID",
		},
		{
			name:           "negative DefaultTTL",
			overrideConfig: func(c *issuer.Config) { c.DefaultTTL = -time.Second },
			expectErr:      "issuer: DefaultTTL must be positive, got -1s",
		},
		{
			name:           "nil VerificationKey",
			overrideConfig: func(c *issuer.Config) { c.VerificationKeys = []jwk.Key{publicJWK(t, ed), nil} },
			expectErr:      "issuer: VerificationKeys[1] is nil",
		},
		{
			name: "VerificationKey reusing the Signer's kid",
			overrideConfig: func(c *issuer.Config) {
				k := publicJWK(t, ed)
				_ = k.Set(jwk.KeyIDKey, es.KeyID())
				c.VerificationKeys = []jwk.Key{k}
			},
			expectErr: `issuer: VerificationKeys[0] has the Signer's kid "` + es.KeyID() + `" but is a different key`,
		},
		{
			name: "VerificationKey without alg",
			overrideConfig: func(c *issuer.Config) {
				k := publicJWK(t, ed)
				_ = k.Remove(jwk.AlgorithmKey)
				c.VerificationKeys = []jwk.Key{k}
			},
			expectErr: `issuer: key set: accesstoken: key "` + ed.KeyID() + `" has no alg`,
		},
		{
			name: "VerificationKey without kid",
			overrideConfig: func(c *issuer.Config) {
				k := publicJWK(t, ed)
				_ = k.Remove(jwk.KeyIDKey)
				c.VerificationKeys = []jwk.Key{k}
			},
			expectErr: "issuer: key set: accesstoken: key 1 has no kid",
		},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := issuer.Config{IssuerURL: testIssuerURL, Signer: es, Clock: fixedClock}
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

// TestKeySetJWKS checks the JWKS document: public keys only, with kid, alg
// and use.
func TestKeySetJWKS(t *testing.T) {
	cfg := baseConfig(t)
	cfg.VerificationKeys = []jwk.Key{publicJWK(t, testSigner(t, jwa.EdDSA()))}
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
	key, err := parsed.LookupKey(context.Background(), cfg.Signer.KeyID())
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
	if !cfg.Signer.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(raw) {
		t.Error("signer JWK does not hold the signer's public key")
	}
}
