package jwtcheck_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"

	"github.com/spiffe-sts/spiffe-sts/internal/jwtcheck"
)

func TestIsCompactJWS(t *testing.T) {
	for raw, want := range map[string]bool{
		"aGVhZA.cGF5bG9hZA.c2ln":   true,
		"a-_9.b.c":                 true,
		"":                         false,
		"a.b":                      false,
		"a.b.c.d":                  false,
		".b.c":                     false, // empty header
		"a..c":                     false, // detached payload
		"a.b.":                     false, // unsigned
		"a.b.c=":                   false, // padding is not base64url
		"a.b.c ":                   false,
		"a+b.c.d":                  false,
		`{"payload":"x"}`:          false, // JSON serialization
		"aGVhZA.cGF5bG9hZA.c2ln\n": false,
	} {
		if got := jwtcheck.IsCompactJWS(raw); got != want {
			t.Errorf("IsCompactJWS(%q) = %v, want %v", raw, got, want)
		}
	}
}

func TestTimes(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	const exp, nbf = 1_800_000_000, 1_800_000_010
	for _, tc := range []struct {
		name              string
		exp, nbf          int64
		leeway            time.Duration
		expired, notValid bool
	}{
		{name: "valid", exp: exp + 1, nbf: exp},
		{name: "exp is now", exp: exp, expired: true},
		{name: "exp is now, leeway", exp: exp, leeway: time.Second},
		{name: "exp past leeway", exp: exp - 2, leeway: time.Second, expired: true},
		{name: "exp absent", exp: 0, expired: true},
		{name: "nbf in the future", exp: exp + 60, nbf: nbf, notValid: true},
		{name: "nbf within leeway", exp: exp + 60, nbf: nbf, leeway: 10 * time.Second},
		{name: "nbf beyond leeway", exp: exp + 60, nbf: nbf, leeway: 9 * time.Second, notValid: true},
		{name: "nbf absent", exp: exp + 60},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := jwtcheck.Expired(now, tc.exp, tc.leeway); got != tc.expired {
				t.Errorf("Expired = %v, want %v", got, tc.expired)
			}
			if got := jwtcheck.NotYetValid(now, tc.nbf, tc.leeway); got != tc.notValid {
				t.Errorf("NotYetValid = %v, want %v", got, tc.notValid)
			}
		})
	}
	if got, want := jwtcheck.Deadline(exp, time.Minute), now.Add(time.Minute); !got.Equal(want) {
		t.Errorf("Deadline = %s, want %s", got, want)
	}
}

func TestCheckScopeToken(t *testing.T) {
	for scope, want := range map[string]string{
		"read":         "",
		"orders:write": "",
		"!#[]~":        "",
		"":             "empty scope",
		" \t":          "empty scope",
		"a b":          `scope "a b" contains ' ', which RFC 6749 §3.3 does not allow`,
		`say"hi"`:      `scope "say\"hi\"" contains '"', which RFC 6749 §3.3 does not allow`,
		`back\slash`:   `scope "back\\slash" contains '\\', which RFC 6749 §3.3 does not allow`,
		"caf\u00e9":    `scope "café" contains 'é', which RFC 6749 §3.3 does not allow`,
		"tab\t":        `scope "tab\t" contains '\t', which RFC 6749 §3.3 does not allow`,
		"del\x7f":      `scope "del\x7f" contains '\x7f', which RFC 6749 §3.3 does not allow`,
		"bad\xffutf8":  `scope "bad\xffutf8" contains '�', which RFC 6749 §3.3 does not allow`,
	} {
		err := jwtcheck.CheckScopeToken(scope)
		got := ""
		if err != nil {
			got = err.Error()
		}
		if got != want {
			t.Errorf("CheckScopeToken(%q) = %q, want %q", scope, got, want)
		}
		if valid := jwtcheck.IsScopeToken(scope); valid != (want == "") {
			t.Errorf("IsScopeToken(%q) = %v", scope, valid)
		}
	}
}

// keySet is a map of keys by kid that counts lookups.
type keySet struct {
	keys    map[string]jwk.Key
	lookups int
}

var errUnknown = errors.New("unknown key")

func (s *keySet) LookupKey(_ context.Context, kid string) (jwk.Key, error) {
	s.lookups++
	if k, ok := s.keys[kid]; ok {
		return k, nil
	}
	return nil, fmt.Errorf("%w %q", errUnknown, kid)
}

func TestKeyProvider(t *testing.T) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := jwk.PublicKeyOf(priv)
	if err != nil {
		t.Fatal(err)
	}
	if err := pub.Set(jwk.AlgorithmKey, jwa.ES256()); err != nil {
		t.Fatal(err)
	}
	noAlg, err := jwk.PublicKeyOf(priv)
	if err != nil {
		t.Fatal(err)
	}
	payload := []byte(`{"sub":"x"}`)
	sign := func(kid string, alg jwa.SignatureAlgorithm, key any) string {
		hdr := jws.NewHeaders()
		if kid != "" {
			_ = hdr.Set(jws.KeyIDKey, kid)
		}
		raw, err := jws.Sign(payload, jws.WithKey(alg, key, jws.WithProtectedHeaders(hdr)))
		if err != nil {
			t.Fatal(err)
		}
		return string(raw)
	}
	hmacKey := []byte("0123456789abcdef0123456789abcdef")
	for _, tc := range []struct {
		name        string
		token       string
		algs        []jwa.SignatureAlgorithm
		expectErr   error // nil: verifies
		wantLookups int
	}{
		{name: "valid", token: sign("k1", jwa.ES256(), priv), wantLookups: 1},
		{name: "no kid", token: sign("", jwa.ES256(), priv), expectErr: jwtcheck.ErrNoKeyID},
		{name: "unknown kid", token: sign("k2", jwa.ES256(), priv), expectErr: errUnknown, wantLookups: 1},
		{name: "alg not accepted", token: sign("k1", jwa.ES256(), priv), algs: []jwa.SignatureAlgorithm{jwa.RS256()}, expectErr: jwtcheck.ErrAlgorithm},
		{name: "key without alg", token: sign("k0", jwa.ES256(), priv), expectErr: jwtcheck.ErrAlgorithm, wantLookups: 1},
		{name: "alg not the key's", token: sign("k1", jwa.HS256(), hmacKey), algs: []jwa.SignatureAlgorithm{jwa.ES256(), jwa.HS256()}, expectErr: jwtcheck.ErrAlgorithm, wantLookups: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			keys := &keySet{keys: map[string]jwk.Key{"k1": pub, "k0": noAlg}}
			algs := tc.algs
			if algs == nil {
				algs = []jwa.SignatureAlgorithm{jwa.ES256()}
			}
			got, err := jws.Verify([]byte(tc.token), jws.WithKeyProvider(jwtcheck.KeyProvider(keys, algs)))
			switch {
			case tc.expectErr == nil && err != nil:
				t.Fatalf("Verify: %v", err)
			case tc.expectErr == nil && string(got) != string(payload):
				t.Fatalf("payload %q", got)
			case tc.expectErr != nil && !errors.Is(err, tc.expectErr):
				t.Fatalf("Verify error %v, want %v", err, tc.expectErr)
			}
			if keys.lookups != tc.wantLookups {
				t.Errorf("lookups = %d, want %d", keys.lookups, tc.wantLookups)
			}
		})
	}
}
