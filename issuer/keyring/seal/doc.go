// Package seal encrypts signing keys at rest for the key ring: AES-256-GCM
// (NIST SP 800-38D) under a 32-byte key-encryption key (KEK), with a fresh
// random 96-bit nonce per sealed value and caller-supplied additional data
// that binds the ciphertext to where it is stored.
//
// The KEK comes from a file that the caller (cmd/) reads, for example a
// Kubernetes Secret, holding either the raw 32 bytes or their base64
// encoding:
//
//	raw, err := os.ReadFile("/run/secrets/spiffe-sts/kek")
//	if err != nil {
//		return err
//	}
//	kek, err := seal.ParseKEK(raw)
//	if err != nil {
//		return err
//	}
//	sealed, err := kek.Seal(pkcs8, aad)   // store sealed
//	pkcs8, err = kek.Open(sealed, aad)    // fails unless aad and kek match
//
// A sealed value is one version byte (0x01), the 12-byte nonce and the GCM
// ciphertext with its 16-byte tag. Open fails with ErrOpen, whatever went
// wrong (wrong KEK, other additional data, tampered or truncated input), so
// that nothing about the plaintext leaks through error texts.
//
// Generate a KEK with, for example, `head -c 32 /dev/urandom | base64`.
package seal
