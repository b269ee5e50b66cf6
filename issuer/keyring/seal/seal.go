package seal

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
)

const (
	// KEKSize is the size of a key-encryption key: AES-256.
	KEKSize = 32
	// version is the first byte of every sealed value; 0x01 is
	// AES-256-GCM with a 96-bit random nonce.
	version byte = 0x01
	// nonceSize is the GCM nonce size recommended by NIST SP 800-38D §8.2.
	nonceSize = 12
	// Overhead is how many bytes Seal adds to the plaintext: version,
	// nonce and GCM tag.
	Overhead = 1 + nonceSize + 16
)

// ErrOpen is returned (wrapped) by Open for any value that does not
// decrypt under the KEK and additional data given.
var ErrOpen = errors.New("seal: value does not open under this key-encryption key and additional data")

// KEK is a key-encryption key. It is safe for concurrent use.
type KEK struct {
	aead cipher.AEAD
}

// ParseKEK returns the KEK held in data: exactly 32 raw bytes, or the
// base64 encoding (standard or URL alphabet, padded or not, surrounding
// whitespace ignored) of 32 bytes. Anything else is an error that does not
// quote data.
func ParseKEK(data []byte) (*KEK, error) {
	key := data
	if len(data) != KEKSize {
		text := bytes.TrimSpace(data)
		key = nil
		for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
			if b, err := enc.DecodeString(string(text)); err == nil {
				key = b
				break
			}
		}
		if key == nil {
			return nil, fmt.Errorf("seal: key-encryption key is neither %d raw bytes nor base64 (%d bytes read)", KEKSize, len(data))
		}
		if len(key) != KEKSize {
			return nil, fmt.Errorf("seal: key-encryption key decodes from base64 to %d bytes, want %d", len(key), KEKSize)
		}
	}
	return NewKEK(key)
}

// NewKEK returns the KEK made of the 32 bytes key.
func NewKEK(key []byte) (*KEK, error) {
	if len(key) != KEKSize {
		return nil, fmt.Errorf("seal: key-encryption key is %d bytes, want %d", len(key), KEKSize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("seal: %w", err)
	}
	return &KEK{aead: aead}, nil
}

// Seal encrypts plaintext with a fresh random nonce and authenticates it
// together with additionalData, which Open must be given unchanged.
func (k *KEK) Seal(plaintext, additionalData []byte) ([]byte, error) {
	out := make([]byte, 1+nonceSize, Overhead+len(plaintext))
	out[0] = version
	if _, err := rand.Read(out[1:]); err != nil {
		return nil, fmt.Errorf("seal: nonce: %w", err)
	}
	return k.aead.Seal(out, out[1:1+nonceSize], plaintext, additionalData), nil
}

// Open decrypts a value made by Seal with the same KEK and additional
// data. Any mismatch returns an error wrapping ErrOpen.
func (k *KEK) Open(sealed, additionalData []byte) ([]byte, error) {
	if len(sealed) < Overhead {
		return nil, fmt.Errorf("%w (%d bytes is too short)", ErrOpen, len(sealed))
	}
	if sealed[0] != version {
		return nil, fmt.Errorf("%w (unknown version %#x)", ErrOpen, sealed[0])
	}
	plain, err := k.aead.Open(nil, sealed[1:1+nonceSize], sealed[1+nonceSize:], additionalData)
	if err != nil {
		return nil, ErrOpen
	}
	return plain, nil
}

// IsSealed reports whether b looks like a value made by Seal (its version
// byte), as opposed to a DER-encoded PKCS#8 key, which starts with 0x30.
func IsSealed(b []byte) bool {
	return len(b) > 0 && b[0] == version
}
