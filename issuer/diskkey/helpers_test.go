package diskkey_test

import "github.com/lestrrat-go/jwx/v2/jwk"

func isPrivate(k jwk.Key) (bool, error) { return jwk.IsPrivateKey(k) }
