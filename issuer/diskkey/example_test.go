package diskkey_test

import (
	"fmt"
	"os"

	"github.com/lestrrat-go/jwx/v3/jwa"

	"github.com/spiffe-sts/spiffe-sts/issuer"
	"github.com/spiffe-sts/spiffe-sts/issuer/diskkey"
)

func ExampleOpen() {
	dir, err := os.MkdirTemp("", "spiffe-sts")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)

	// The first start creates dir/keys/es256.pem; later starts load it.
	signer, verificationKeys, err := diskkey.Open(dir, jwa.ES256())
	if err != nil {
		panic(err)
	}
	iss, err := issuer.New(issuer.Config{
		IssuerURL:        "https://sts.example.org",
		Signer:           signer,
		VerificationKeys: verificationKeys,
	})
	if err != nil {
		panic(err)
	}
	fmt.Println(signer.Algorithm(), iss.KeySet().Len())

	again, _, err := diskkey.Open(dir, jwa.ES256())
	if err != nil {
		panic(err)
	}
	fmt.Println("same key:", again.KeyID() == signer.KeyID())
	// Output:
	// ES256 1
	// same key: true
}
