package diskkey_test

import "github.com/lestrrat-go/jwx/v3/jwk"

func isPrivate(k jwk.Key) (bool, error) { return jwk.IsPrivateKey(k) }

func keyID(k jwk.Key) string { kid, _ := k.KeyID(); return kid }

func keyAlg(k jwk.Key) string { alg, _ := k.Algorithm(); return alg.String() }
