// Package diskkey is the persistent key backend of the issuer: it keeps
// signing keys as PKCS#8 PEM files in a directory.
//
// Layout, under the data directory given to Open:
//
//	keys/          mode 0700
//	  es256.pem    mode 0600, "PRIVATE KEY" (PKCS#8) holding a P-256 key
//	  eddsa.pem    an Ed25519 key
//	  rs256.pem    an RSA key of at least 2048 bits
//
// Open loads every key file, creates the key for the requested algorithm
// when it is missing, and returns it as an issuer.Signer whose key ID is the
// RFC 7638 thumbprint of its public key. The public keys of the other files
// are returned for issuer.Config.VerificationKeys, so switching algorithms
// keeps tokens signed with the old key verifiable:
//
//	signer, verificationKeys, err := diskkey.Open("/var/lib/spiffe-sts", jwa.ES256)
//	if err != nil {
//		return err
//	}
//	iss, err := issuer.New(issuer.Config{
//		IssuerURL:        "https://sts.example.org",
//		Signer:           signer,
//		VerificationKeys: verificationKeys,
//	})
//
// A key is written to a temporary file, synced, and hard-linked to its final
// name, which fails if the name exists: a key file is never overwritten, and
// a crash leaves either no key or a complete one. Open refuses, with an error
// naming the file, any key file it cannot read, that is not PKCS#8 PEM, that
// holds the wrong kind of key for its name or that group or others may
// access; it never changes or removes such a file.
package diskkey
