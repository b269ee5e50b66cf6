package exchange_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/exchange"
	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
	"github.com/spiffe-sts/spiffe-sts/internal/ststest"
	"github.com/spiffe-sts/spiffe-sts/issuer"
)

// swapKeys is a key source whose keys the test replaces, as a key ring
// does when it rotates.
type swapKeys struct {
	signer atomic.Pointer[issuer.Signer]
	keys   atomic.Pointer[accesstoken.StaticKeySet]
}

func (s *swapKeys) SigningKey() issuer.Signer {
	if p := s.signer.Load(); p != nil {
		return *p
	}
	return nil
}

func (s *swapKeys) PublicKeys() *accesstoken.StaticKeySet { return s.keys.Load() }

// set makes signer the signing key and publishes it with others.
func (s *swapKeys) set(t *testing.T, signer issuer.Signer, others ...issuer.Signer) {
	t.Helper()
	set := jwk.NewSet()
	for _, k := range append([]issuer.Signer{signer}, others...) {
		if k == nil {
			continue
		}
		j, err := issuer.PublicJWK(k)
		if err != nil {
			t.Fatal(err)
		}
		_ = set.AddKey(j)
	}
	keys, err := accesstoken.NewStaticKeySet(set)
	if err != nil {
		t.Fatal(err)
	}
	s.keys.Store(keys)
	s.signer.Store(&signer)
}

func newSigner(t *testing.T) issuer.Signer {
	t.Helper()
	s, err := issuer.GenerateSigner(jwa.ES256())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestJWKSFollowsKeys checks that /jwks serves the keys as they are at
// each request, with the configured max-age on it and on both metadata
// documents, that the server's own-token check uses the current keys,
// and that a Minter without a signing key makes the server unready.
func TestJWKSFollowsKeys(t *testing.T) {
	k1, k2 := newSigner(t), newSigner(t)
	src := &swapKeys{}
	src.set(t, k1)
	var iss *issuer.Issuer
	sts := ststest.Start(t, func(c *exchange.Config) {
		var err error
		if iss, err = issuer.New(issuer.Config{IssuerURL: c.IssuerURL, Keys: src}); err != nil {
			t.Fatal(err)
		}
		c.Minter, c.Keys, c.JWKSMaxAge = iss, iss.KeySet(), 90*time.Second
	})
	c := sts.Client(nil)
	get := func(path string) (string, []byte) {
		t.Helper()
		resp, err := c.Get(sts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d", path, resp.StatusCode)
		}
		return resp.Header.Get("Cache-Control"), body
	}
	jwksKIDs := func() map[string]bool {
		t.Helper()
		cc, body := get(protocol.PathJWKS)
		if cc != "public, max-age=90" {
			t.Errorf("/jwks Cache-Control %q, want public, max-age=90", cc)
		}
		set, err := accesstoken.ParseStaticKeySet(body)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]bool{}
		for _, k := range []issuer.Signer{k1, k2} {
			if _, err := set.LookupKey(context.Background(), k.KeyID()); err == nil {
				out[k.KeyID()] = true
			}
		}
		return out
	}
	for _, path := range []string{protocol.PathOAuthMetadata, protocol.PathOpenIDMetadata} {
		if cc, _ := get(path); cc != "public, max-age=90" {
			t.Errorf("%s Cache-Control %q, want public, max-age=90", path, cc)
		}
	}
	if got := jwksKIDs(); len(got) != 1 || !got[k1.KeyID()] {
		t.Fatalf("JWKS %v, want k1 only", got)
	}
	if err := sts.Server.Ready(); err != nil {
		t.Fatalf("Ready: %v", err)
	}

	// A token signed by k1, before and after k2 takes over.
	web := sts.WorkloadSVID(t, "spiffe://example.org/ns/prod/sa/web")
	claims := accesstoken.Claims{Subject: web.ID.String(), ClientID: web.ID.String(), Audience: accesstoken.Audience{ststest.APIAudience}}
	tok, err := iss.Mint(context.Background(), &claims, web.Certificates[0], 0)
	if err != nil {
		t.Fatal(err)
	}
	verifier := accesstoken.NewVerifier(sts.URL, iss.KeySet(), &accesstoken.Config{Audiences: []string{ststest.APIAudience}})
	if _, err := verifier.Verify(context.Background(), tok, web.Certificates[0]); err != nil {
		t.Fatalf("a token of k1: %v", err)
	}
	src.set(t, k2, k1) // k2 signs, k1 retired
	if got := jwksKIDs(); len(got) != 2 {
		t.Fatalf("JWKS %v, want k1 and k2", got)
	}
	if _, err := iss.KeySet().LookupKey(context.Background(), k1.KeyID()); err != nil {
		t.Errorf("retired k1 not in the key set: %v", err)
	}
	src.set(t, k2) // k1 withdrawn
	if got := jwksKIDs(); len(got) != 1 || !got[k2.KeyID()] {
		t.Fatalf("JWKS %v, want k2 only", got)
	}
	// A fresh verifier: a verifier's cache keeps tokens it has verified
	// until they expire (see accesstoken.Config.CacheSize).
	verifier = accesstoken.NewVerifier(sts.URL, iss.KeySet(), &accesstoken.Config{Audiences: []string{ststest.APIAudience}})
	if _, err := verifier.Verify(context.Background(), tok, web.Certificates[0]); !errors.Is(err, accesstoken.ErrUnknownKey) {
		t.Errorf("a token of a withdrawn key: %v, want ErrUnknownKey", err)
	}

	// No signing key: not ready.
	src.signer.Store(nil)
	if err := sts.Server.Ready(); !errors.Is(err, issuer.ErrNoSigningKey) {
		t.Errorf("Ready without a signing key: %v, want ErrNoSigningKey", err)
	}
}
