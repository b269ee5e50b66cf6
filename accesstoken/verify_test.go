package accesstoken_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/internal/accesshook"
	"github.com/spiffe-sts/spiffe-sts/internal/testca"
)

const (
	issuerURL = "https://sts.example.org"
	audience  = "spiffe://example.org/api"
	subject   = "spiffe://example.org/web"
)

var now = time.Unix(1_800_000_000, 0)

type keyPair struct {
	priv *ecdsa.PrivateKey
	kid  string
}

func newKeyPair(t testing.TB, kid string) keyPair {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return keyPair{priv: priv, kid: kid}
}

func (k keyPair) publicSet(t testing.TB, alg jwa.SignatureAlgorithm) *accesstoken.StaticKeySet {
	t.Helper()
	pub, err := jwk.Import(k.priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	_ = pub.Set(jwk.KeyIDKey, k.kid)
	_ = pub.Set(jwk.AlgorithmKey, alg)
	set := jwk.NewSet()
	_ = set.AddKey(pub)
	keys, err := accesstoken.NewStaticKeySet(set)
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// sign signs claims with headers typ and kid.
func (k keyPair) sign(t testing.TB, typ string, claims any) string {
	t.Helper()
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	hdr := jws.NewHeaders()
	_ = hdr.Set(jws.KeyIDKey, k.kid)
	if typ != "" {
		_ = hdr.Set(jws.TypeKey, typ)
	}
	raw, err := jws.Sign(payload, jws.WithKey(jwa.ES256(), k.priv, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}

// verifyFixture is where the verification tables start: two X509-SVID
// leaves of subject from one CA, the signing key k1 and its ES256 key set.
func verifyFixture(t testing.TB) (leaf, otherLeaf *x509.Certificate, key keyPair, keys *accesstoken.StaticKeySet) {
	t.Helper()
	ca := testca.New(t, "example.org")
	leaf = ca.SVID(t, subject, time.Hour).Certificates[0]
	otherLeaf = ca.SVID(t, subject, time.Hour).Certificates[0]
	key = newKeyPair(t, "k1")
	return leaf, otherLeaf, key, key.publicSet(t, jwa.ES256())
}

func TestVerify(t *testing.T) {
	ctx := context.Background()
	leaf, otherLeaf, key, keys := verifyFixture(t)

	baseline := func() accesstoken.Claims {
		return accesstoken.Claims{
			Issuer: issuerURL, Subject: subject, Audience: accesstoken.Audience{audience},
			Expiry: now.Add(time.Minute).Unix(), IssuedAt: now.Unix(), NotBefore: now.Unix(),
			JWTID: "jti-1", ClientID: subject, Scope: "read write",
			Confirmation: accesstoken.Confirmation{X5TS256: accesstoken.Thumbprint(leaf)},
		}
	}
	tests := []struct {
		name           string
		overrideClaims func(*accesstoken.Claims)
		overrideConfig func(*accesstoken.Config)
		overrideToken  func(claims accesstoken.Claims) string
		peer           func() any // *x509.Certificate or nil
		expectErrIs    error
		expectExpired  bool
	}{
		{name: "baseline"},
		{name: "application/at+jwt typ", overrideToken: func(c accesstoken.Claims) string { return key.sign(t, "application/at+jwt", c) }},
		{name: "audience among several", overrideClaims: func(c *accesstoken.Claims) { c.Audience = accesstoken.Audience{"x", audience} }},
		{name: "wrong typ", overrideToken: func(c accesstoken.Claims) string { return key.sign(t, "JWT", c) }, expectErrIs: accesstoken.ErrType},
		{name: "no typ", overrideToken: func(c accesstoken.Claims) string { return key.sign(t, "", c) }, expectErrIs: accesstoken.ErrType},
		{name: "unknown key", overrideToken: func(c accesstoken.Claims) string { return newKeyPair(t, "k2").sign(t, accesstoken.Type, c) }, expectErrIs: accesstoken.ErrUnknownKey},
		{name: "forged with the right kid", overrideToken: func(c accesstoken.Claims) string { return newKeyPair(t, "k1").sign(t, accesstoken.Type, c) }, expectErrIs: accesstoken.ErrSignature},
		{name: "tampered payload", overrideToken: func(c accesstoken.Claims) string {
			raw := key.sign(t, accesstoken.Type, c)
			c.Scope = "admin"
			other := key.sign(t, accesstoken.Type, c)
			parts, otherParts := strings.Split(raw, "."), strings.Split(other, ".")
			return parts[0] + "." + otherParts[1] + "." + parts[2]
		}, expectErrIs: accesstoken.ErrSignature},
		{name: "alg none", overrideToken: func(c accesstoken.Claims) string {
			payload, _ := json.Marshal(c)
			hdr := `{"alg":"none","typ":"at+jwt","kid":"k1"}`
			return base64.RawURLEncoding.EncodeToString([]byte(hdr)) + "." + base64.RawURLEncoding.EncodeToString(payload) + "."
		}, expectErrIs: accesstoken.ErrMalformed}, // an empty signature is refused before parsing
		{name: "alg none with a signature", overrideToken: func(c accesstoken.Claims) string {
			payload, _ := json.Marshal(c)
			hdr := `{"alg":"none","typ":"at+jwt","kid":"k1"}`
			return base64.RawURLEncoding.EncodeToString([]byte(hdr)) + "." + base64.RawURLEncoding.EncodeToString(payload) + ".c2ln"
		}, expectErrIs: accesstoken.ErrSignature},
		{name: "algorithm not accepted", overrideConfig: func(c *accesstoken.Config) { c.Algorithms = []jwa.SignatureAlgorithm{jwa.EdDSA()} }, expectErrIs: accesstoken.ErrSignature},
		{name: "JSON serialization", overrideToken: func(c accesstoken.Claims) string {
			parts := strings.Split(key.sign(t, accesstoken.Type, c), ".")
			return `{"payload":"` + parts[1] + `","signatures":[{"protected":"` + parts[0] + `","header":{"x":".."},"signature":"` + parts[2] + `"}]}`
		}, expectErrIs: accesstoken.ErrMalformed},
		{name: "not a JWS", overrideToken: func(accesstoken.Claims) string { return "abc" }, expectErrIs: accesstoken.ErrMalformed},
		{name: "wrong issuer", overrideClaims: func(c *accesstoken.Claims) { c.Issuer = "https://evil.example" }, expectErrIs: accesstoken.ErrIssuer},
		{name: "wrong audience", overrideClaims: func(c *accesstoken.Claims) { c.Audience = accesstoken.Audience{"spiffe://example.org/other"} }, expectErrIs: accesstoken.ErrAudience},
		{name: "no audience configured", overrideConfig: func(c *accesstoken.Config) { c.Audiences = nil }, expectErrIs: accesstoken.ErrNoAudienceConfig},
		{name: "audience check skipped", overrideConfig: func(c *accesstoken.Config) { c.Audiences, c.InsecureSkipAudienceCheck = nil, true }},
		{name: "expired", overrideClaims: func(c *accesstoken.Claims) { c.Expiry = now.Unix() }, expectExpired: true},
		{name: "expired within leeway", overrideClaims: func(c *accesstoken.Claims) { c.Expiry = now.Add(-2 * time.Second).Unix() }, overrideConfig: func(c *accesstoken.Config) { c.Leeway = 5 * time.Second }},
		{name: "no exp", overrideClaims: func(c *accesstoken.Claims) { c.Expiry = 0 }, expectExpired: true},
		{name: "not yet valid", overrideClaims: func(c *accesstoken.Claims) { c.NotBefore = now.Add(10 * time.Second).Unix() }, expectErrIs: accesstoken.ErrNotYetValid},
		{name: "not yet valid within leeway", overrideClaims: func(c *accesstoken.Claims) { c.NotBefore = now.Add(3 * time.Second).Unix() }, overrideConfig: func(c *accesstoken.Config) { c.Leeway = 5 * time.Second }},
		{name: "bound to another certificate", peer: func() any { return otherLeaf }, expectErrIs: accesstoken.ErrNotBound},
		{name: "no peer certificate", peer: func() any { return nil }, expectErrIs: accesstoken.ErrNoCertificate},
		{name: "no cnf", overrideClaims: func(c *accesstoken.Claims) { c.Confirmation = accesstoken.Confirmation{} }, expectErrIs: accesstoken.ErrMalformed},
		{name: "no sub", overrideClaims: func(c *accesstoken.Claims) { c.Subject = "" }, expectErrIs: accesstoken.ErrMalformed},
		{name: "claims not JSON object", overrideToken: func(accesstoken.Claims) string { return key.sign(t, accesstoken.Type, []int{1}) }, expectErrIs: accesstoken.ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			claims := baseline()
			if tt.overrideClaims != nil {
				tt.overrideClaims(&claims)
			}
			cfg := accesstoken.Config{Audiences: []string{audience}, Now: func() time.Time { return now }}
			if tt.overrideConfig != nil {
				tt.overrideConfig(&cfg)
			}
			raw := key.sign(t, accesstoken.Type, claims)
			if tt.overrideToken != nil {
				raw = tt.overrideToken(claims)
			}
			v := accesstoken.NewVerifier(issuerURL, keys, &cfg)
			peer := leaf
			if tt.peer != nil {
				peer, _ = tt.peer().(*x509.Certificate)
			}
			got, err := v.Verify(ctx, raw, peer)
			var expired *accesstoken.ExpiredError
			switch {
			case tt.expectExpired:
				if !errors.As(err, &expired) {
					t.Fatalf("err = %v, want *ExpiredError", err)
				}
			case tt.expectErrIs != nil:
				if !errors.Is(err, tt.expectErrIs) {
					t.Fatalf("err = %v, want %v", err, tt.expectErrIs)
				}
			case err != nil:
				t.Fatalf("unexpected error: %v", err)
			default:
				if got.Subject != subject || !got.HasScope("write") || got.HasScope("admin") {
					t.Fatalf("claims = %+v", got)
				}
			}
		})
	}
}

// verifyWithoutBinding is the module-internal verification the server
// uses for its own tokens.
func verifyWithoutBinding(v *accesstoken.Verifier, ctx context.Context, raw string) (*accesstoken.Claims, error) {
	return accesshook.VerifyWithoutBinding[*accesstoken.Claims](ctx, v, raw)
}

func TestVerifyWithoutBindingStillChecksSignature(t *testing.T) {
	key := newKeyPair(t, "k1")
	v := accesstoken.NewVerifier(issuerURL, key.publicSet(t, jwa.ES256()), &accesstoken.Config{Now: func() time.Time { return now }})
	claims := accesstoken.Claims{Issuer: issuerURL, Subject: subject, Expiry: now.Add(time.Minute).Unix(),
		Confirmation: accesstoken.Confirmation{X5TS256: "not-this-cert"}}
	if _, err := verifyWithoutBinding(v, context.Background(), key.sign(t, accesstoken.Type, claims)); err != nil {
		t.Fatal(err)
	}
	forged := newKeyPair(t, "k1").sign(t, accesstoken.Type, claims)
	if _, err := verifyWithoutBinding(v, context.Background(), forged); !errors.Is(err, accesstoken.ErrSignature) {
		t.Fatalf("forged token: err = %v", err)
	}
}

func TestStaticKeySet(t *testing.T) {
	priv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	key, _ := jwk.Import(priv)
	tests := []struct {
		name      string
		override  func(jwk.Key)
		twice     bool
		expectErr string
	}{
		{name: "baseline"},
		{name: "no kid", override: func(k jwk.Key) { _ = k.Remove(jwk.KeyIDKey) }, expectErr: "accesstoken: key 0 has no kid"},
		{name: "no alg", override: func(k jwk.Key) { _ = k.Remove(jwk.AlgorithmKey) }, expectErr: `accesstoken: key "k" has no alg`},
		{name: "duplicate kid", twice: true, expectErr: `accesstoken: two keys have kid "k"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, _ := key.Clone()
			_ = k.Set(jwk.KeyIDKey, "k")
			_ = k.Set(jwk.AlgorithmKey, jwa.ES256())
			if tt.override != nil {
				tt.override(k)
			}
			set := jwk.NewSet()
			_ = set.AddKey(k)
			if tt.twice {
				k2, _ := k.Clone()
				_ = k2.Set("x-other", "1")
				_ = set.AddKey(k2)
			}
			keys, err := accesstoken.NewStaticKeySet(set)
			if tt.expectErr != "" {
				if err == nil || err.Error() != tt.expectErr {
					t.Fatalf("err = %v, want %s", err, tt.expectErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			// A private key handed in is published only as its public part.
			out, _ := keys.MarshalJSON()
			if strings.Contains(string(out), `"d"`) {
				t.Fatalf("private material published: %s", out)
			}
			if _, err := keys.LookupKey(context.Background(), "nope"); !errors.Is(err, accesstoken.ErrUnknownKey) {
				t.Fatalf("unknown kid: %v", err)
			}
		})
	}
}

func TestAudienceJSON(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want []string
	}{{`"a"`, []string{"a"}}, {`["a","b"]`, []string{"a", "b"}}} {
		var a accesstoken.Audience
		if err := json.Unmarshal([]byte(tt.in), &a); err != nil || strings.Join(a, ",") != strings.Join(tt.want, ",") {
			t.Errorf("%s -> %v, %v", tt.in, a, err)
		}
		out, _ := json.Marshal(a)
		if string(out) != tt.in {
			t.Errorf("round trip %s -> %s", tt.in, out)
		}
	}
	var a accesstoken.Audience
	if err := json.Unmarshal([]byte(`7`), &a); err == nil {
		t.Error("a number decoded as an audience")
	}
}

func TestThumbprint(t *testing.T) {
	ca := testca.New(t, "example.org")
	leaf := ca.SVID(t, subject, time.Hour).Certificates[0]
	tp := accesstoken.Thumbprint(leaf)
	// RFC 8705 §3.1: base64url without padding of a 32-byte digest.
	if len(tp) != 43 || strings.ContainsAny(tp, "+/=") {
		t.Fatalf("thumbprint %q is not unpadded base64url SHA-256", tp)
	}
	if tp == accesstoken.Thumbprint(ca.Cert) {
		t.Fatal("two certificates share a thumbprint")
	}
}

// FuzzClaimsJSON decodes arbitrary claims, including cnf: decoding never
// panics, and a decoded Confirmation survives a round trip.
func FuzzClaimsJSON(f *testing.F) {
	f.Add([]byte(`{"sub":"s","aud":"a","cnf":{"x5t#S256":"abc"},"act":{"sub":"b","act":{"sub":"c"}}}`))
	f.Add([]byte(`{"aud":["a","b"],"cnf":null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var c accesstoken.Claims
		if err := json.Unmarshal(data, &c); err != nil {
			return
		}
		out, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		var again accesstoken.Claims
		if err := json.Unmarshal(out, &again); err != nil {
			t.Fatal(err)
		}
		if again.Confirmation != c.Confirmation {
			t.Fatalf("cnf changed in a round trip: %q -> %q", c.Confirmation.X5TS256, again.Confirmation.X5TS256)
		}
	})
}
