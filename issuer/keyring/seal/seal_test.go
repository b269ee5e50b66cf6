package seal_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/spiffe-sts/spiffe-sts/issuer/keyring/internal/keyringtest"
	"github.com/spiffe-sts/spiffe-sts/issuer/keyring/seal"
)

func TestRoundTrip(t *testing.T) {
	k := keyringtest.NewKEK(t)
	plain := []byte("PKCS#8 bytes")
	aad := []byte("seq=1 kid=abc alg=ES256")
	a, err := k.Seal(plain, aad)
	if err != nil {
		t.Fatal(err)
	}
	b, err := k.Seal(plain, aad)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a, b) {
		t.Fatal("two seals of the same plaintext are equal: nonce reused")
	}
	if len(a) != len(plain)+seal.Overhead {
		t.Errorf("len = %d, want %d", len(a), len(plain)+seal.Overhead)
	}
	if !seal.IsSealed(a) {
		t.Error("IsSealed = false for a sealed value")
	}
	if bytes.Contains(a, plain) {
		t.Error("sealed value contains the plaintext")
	}
	for _, s := range [][]byte{a, b} {
		got, err := k.Open(s, aad)
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		if !bytes.Equal(got, plain) {
			t.Fatalf("Open = %q, want %q", got, plain)
		}
	}
}

func TestOpenRefuses(t *testing.T) {
	k := keyringtest.NewKEK(t)
	plain := []byte("PKCS#8 bytes")
	aad := []byte("seq=1 kid=abc alg=ES256")
	good, err := k.Seal(plain, aad)
	if err != nil {
		t.Fatal(err)
	}
	flip := func(i int) []byte {
		b := bytes.Clone(good)
		b[i] ^= 1
		return b
	}
	for _, tc := range []struct {
		name   string
		kek    *seal.KEK
		sealed []byte
		aad    []byte
	}{
		{name: "wrong KEK", kek: keyringtest.NewKEK(t), sealed: good, aad: aad},
		{name: "other additional data", kek: k, sealed: good, aad: []byte("seq=2 kid=abc alg=ES256")},
		{name: "no additional data", kek: k, sealed: good, aad: nil},
		{name: "version byte", kek: k, sealed: flip(0), aad: aad},
		{name: "nonce", kek: k, sealed: flip(1), aad: aad},
		{name: "ciphertext", kek: k, sealed: flip(1 + 12), aad: aad},
		{name: "tag", kek: k, sealed: flip(len(good) - 1), aad: aad},
		{name: "truncated by one", kek: k, sealed: good[:len(good)-1], aad: aad},
		{name: "truncated below overhead", kek: k, sealed: good[:seal.Overhead-1], aad: aad},
		{name: "empty", kek: k, sealed: nil, aad: aad},
		{name: "extended", kek: k, sealed: append(bytes.Clone(good), 0), aad: aad},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.kek.Open(tc.sealed, tc.aad)
			if !errors.Is(err, seal.ErrOpen) {
				t.Fatalf("Open = %q, %v; want ErrOpen", got, err)
			}
			if got != nil {
				t.Fatalf("Open returned plaintext %q with an error", got)
			}
		})
	}
}

func TestParseKEK(t *testing.T) {
	raw := bytes.Repeat([]byte{0xA5}, seal.KEKSize)
	other := bytes.Repeat([]byte{0x5A}, seal.KEKSize)
	ref, err := seal.NewKEK(raw)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := ref.Seal([]byte("x"), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		data    []byte
		wantErr string // exact text; empty means success with the key raw
	}{
		{name: "raw", data: raw},
		{name: "base64 std", data: []byte(base64.StdEncoding.EncodeToString(raw))},
		{name: "base64 with newline", data: []byte(base64.StdEncoding.EncodeToString(raw) + "\n")},
		{name: "base64 raw url", data: []byte(base64.RawURLEncoding.EncodeToString(raw))},
		{name: "raw of 31 bytes", data: raw[:31], wantErr: "seal: key-encryption key is neither 32 raw bytes nor base64 (31 bytes read)"},
		{name: "raw of 33 bytes", data: append(bytes.Clone(raw), 1), wantErr: "seal: key-encryption key is neither 32 raw bytes nor base64 (33 bytes read)"},
		{name: "base64 of 16 bytes", data: []byte(base64.StdEncoding.EncodeToString(raw[:16])), wantErr: "seal: key-encryption key decodes from base64 to 16 bytes, want 32"},
		{name: "empty", data: nil, wantErr: "seal: key-encryption key decodes from base64 to 0 bytes, want 32"},
		{name: "other raw key", data: other},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k, err := seal.ParseKEK(tc.data)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("ParseKEK error = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseKEK: %v", err)
			}
			_, err = k.Open(sealed, nil)
			if same := bytes.Equal(tc.data, other); same != (err != nil) {
				t.Fatalf("Open under parsed KEK: %v", err)
			}
		})
	}
}

func TestParseKEKDoesNotQuoteInput(t *testing.T) {
	_, err := seal.ParseKEK([]byte("not a key but a secret-ish string!!"))
	if err == nil || strings.Contains(err.Error(), "secret") {
		t.Fatalf("ParseKEK error = %v", err)
	}
}

func TestIsSealed(t *testing.T) {
	if seal.IsSealed([]byte{0x30, 0x82}) {
		t.Error("IsSealed(DER) = true")
	}
	if seal.IsSealed(nil) {
		t.Error("IsSealed(nil) = true")
	}
}
