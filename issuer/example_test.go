package issuer_test

import (
	"context"
	"fmt"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/issuer"
)

func ExampleIssuer_Mint() {
	signer, err := issuer.GenerateSigner(jwa.ES256())
	if err != nil {
		panic(err)
	}
	keys, err := issuer.StaticKeys(signer) // or issuer.NewRingKeys(ring)
	if err != nil {
		panic(err)
	}
	iss, err := issuer.New(issuer.Config{
		IssuerURL: "https://sts.example.org",
		Keys:      keys,
		Clock:     fixedClock, // omit to use time.Now
	})
	if err != nil {
		panic(err)
	}

	// leaf is the X509-SVID the client authenticated with over mTLS.
	leaf := newLeaf(exampleTB{}, testNow.Add(time.Hour))
	claims := &accesstoken.Claims{
		Subject:  "spiffe://example.org/workload",
		ClientID: "spiffe://example.org/workload",
		Audience: accesstoken.Audience{"spiffe://example.org/api"},
	}
	token, err := iss.Mint(context.Background(), claims, leaf, 0)
	if err != nil {
		panic(err)
	}
	fmt.Println("expires_in:", claims.Expiry-claims.IssuedAt)

	// A resource server checks the token against the issuer's keys and the
	// certificate of the connection it arrived on.
	v := accesstoken.NewVerifier(iss.IssuerURL(), iss.KeySet(), &accesstoken.Config{
		Audiences: []string{"spiffe://example.org/api"},
		Now:       fixedClock,
	})
	verified, err := v.Verify(context.Background(), token, leaf)
	if err != nil {
		panic(err)
	}
	fmt.Println("sub:", verified.Subject)
	// Output:
	// expires_in: 300
	// sub: spiffe://example.org/workload
}
