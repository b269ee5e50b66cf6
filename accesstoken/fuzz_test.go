package accesstoken_test

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
)

// FuzzVerify feeds whole compact JWTs to Verify with a static key set.
// The seeds are tokens signed by that key, valid and invalid, and
// unsigned or garbled ones. Verify must never panic, must refuse with one
// of its documented errors, and may accept only a token whose signing
// input (header and payload, RFC 7515 §5.2) is one the key signed as a
// valid, bound token; a cached verifier must give the same answer.
func FuzzVerify(f *testing.F) {
	ctx := context.Background()
	leaf, _, key, keys := verifyFixture(f)
	claims := accesstoken.Claims{
		Issuer: issuerURL, Subject: subject, Audience: accesstoken.Audience{audience},
		Expiry: now.Add(time.Minute).Unix(), IssuedAt: now.Unix(), NotBefore: now.Unix(),
		JWTID: "jti-1", ClientID: subject, Scope: "read write",
		Confirmation: accesstoken.Confirmation{X5TS256: accesstoken.Thumbprint(leaf)},
		Actor:        &accesstoken.Actor{Subject: "spiffe://example.org/actor"},
	}
	valid := key.sign(f, accesstoken.Type, claims)
	// signed holds the signing inputs of the tokens that may verify.
	signed := map[string]bool{signingInput(valid): true}
	f.Add(valid)
	withActor := key.sign(f, "application/at+jwt", claims)
	signed[signingInput(withActor)] = true
	f.Add(withActor)

	expired, wrongAud, noCnf := claims, claims, claims
	expired.Expiry = now.Add(-time.Hour).Unix()
	wrongAud.Audience = accesstoken.Audience{"spiffe://example.org/other"}
	noCnf.Confirmation = accesstoken.Confirmation{}
	for _, c := range []accesstoken.Claims{expired, wrongAud, noCnf} {
		f.Add(key.sign(f, accesstoken.Type, c))
	}
	f.Add(key.sign(f, "JWT", claims))
	f.Add(newKeyPair(f, "k1").sign(f, accesstoken.Type, claims)) // forged with the right kid
	f.Add(key.sign(f, accesstoken.Type, map[string]any{"iss": issuerURL, "sub": 1}))
	parts := strings.Split(valid, ".")
	b64 := base64.RawURLEncoding.EncodeToString
	f.Add(b64([]byte(`{"alg":"none","typ":"at+jwt","kid":"k1"}`)) + "." + parts[1] + ".")
	f.Add(b64([]byte(`{"alg":"HS256","typ":"at+jwt","kid":"k1"}`)) + "." + parts[1] + "." + parts[2])
	f.Add(parts[0] + "." + parts[1] + "=." + parts[2])
	f.Add(parts[0] + "." + parts[1] + "." + parts[2] + "." + parts[2])
	f.Add(parts[0] + ".." + parts[2])
	f.Add(`{"payload":"` + parts[1] + `","signatures":[{"protected":"` + parts[0] + `","signature":"` + parts[2] + `"}]}`)
	f.Add("..")
	f.Add("")

	cfg := accesstoken.Config{Audiences: []string{audience}, Now: func() time.Time { return now }, Algorithms: []jwa.SignatureAlgorithm{jwa.ES256()}}
	cached := accesstoken.NewVerifier(issuerURL, keys, &cfg)
	cfg.CacheSize = -1
	uncached := accesstoken.NewVerifier(issuerURL, keys, &cfg)
	f.Fuzz(func(t *testing.T, raw string) {
		got, err := uncached.Verify(ctx, raw, leaf)
		_, cachedErr := cached.Verify(ctx, raw, leaf)
		if (err == nil) != (cachedErr == nil) {
			t.Fatalf("uncached: %v; cached: %v", err, cachedErr)
		}
		if err != nil {
			if !isVerifyError(err) {
				t.Fatalf("undocumented error %v", err)
			}
			return
		}
		if !signed[signingInput(raw)] {
			t.Fatalf("verified a token the key never signed: %q", raw)
		}
		if got.Subject != subject || got.Issuer != issuerURL || !accesstoken.BoundTo(got, leaf) {
			t.Fatalf("verified claims %+v", got)
		}
	})
}

// signingInput is the part of a compact JWS the signature covers.
func signingInput(raw string) string {
	i := strings.LastIndexByte(raw, '.')
	if i < 0 {
		return ""
	}
	return raw[:i]
}

func isVerifyError(err error) bool {
	var expired *accesstoken.ExpiredError
	if errors.As(err, &expired) {
		return true
	}
	for _, sentinel := range []error{
		accesstoken.ErrMalformed, accesstoken.ErrSignature, accesstoken.ErrUnknownKey, accesstoken.ErrType, accesstoken.ErrIssuer,
		accesstoken.ErrAudience, accesstoken.ErrNotYetValid, accesstoken.ErrNotBound,
	} {
		if errors.Is(err, sentinel) {
			return true
		}
	}
	return false
}
