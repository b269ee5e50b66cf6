package keyring

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// LegacyKeysDir is the directory under data_dir where issuer/diskkey kept
// one key per algorithm before the ring existed.
const LegacyKeysDir = "keys"

// legacyFiles maps issuer/diskkey's file names (diskkey.FileName) to
// their algorithm. The layout is diskkey's; this package reads it without
// importing diskkey (which depends on JOSE libraries).
var legacyFiles = map[string]string{
	"es256.pem": ES256,
	"eddsa.pem": EdDSA,
	"rs256.pem": RS256,
}

const (
	legacyPEMType = "PRIVATE KEY" // PKCS#8, RFC 7468 §10
	maxLegacyFile = 64 << 10
)

// LegacyKey is a signing key found in the legacy key directory.
type LegacyKey struct {
	Algorithm string
	Key       crypto.Signer
	// Created is the file's modification time.
	Created time.Time
}

// ReadLegacyKeys reads the keys issuer/diskkey left in keysDir
// (data_dir/keys): es256.pem, eddsa.pem and rs256.pem, PKCS#8 "PRIVATE KEY"
// PEM, mode 0600. A missing directory holds no keys. It applies diskkey's
// rules: a .pem file with another name, one that is not a regular file,
// that group or others may access, that is not a single PKCS#8 PEM block or
// that holds the wrong kind of key for its name is an error naming it.
// Files not ending in ".pem" are ignored. Nothing is changed on disk.
//
// Give the result to Config.Legacy: the Manager imports it when the ring
// is empty.
func ReadLegacyKeys(keysDir string) ([]LegacyKey, error) {
	entries, err := os.ReadDir(keysDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("keyring: read legacy key directory: %w", err)
	}
	var keys []LegacyKey
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".pem") {
			continue
		}
		path := filepath.Join(keysDir, e.Name())
		alg, ok := legacyFiles[e.Name()]
		if !ok {
			return nil, fmt.Errorf("keyring: %s: file name names no supported algorithm (want es256.pem, eddsa.pem or rs256.pem)", path)
		}
		if !e.Type().IsRegular() {
			return nil, fmt.Errorf("keyring: %s: not a regular file", path)
		}
		k, err := readLegacyKey(path, alg)
		if err != nil {
			return nil, err
		}
		keys = append(keys, k)
	}
	return keys, nil
}

func readLegacyKey(path, alg string) (LegacyKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return LegacyKey{}, fmt.Errorf("keyring: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return LegacyKey{}, fmt.Errorf("keyring: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return LegacyKey{}, fmt.Errorf("keyring: %s: not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return LegacyKey{}, fmt.Errorf("keyring: %s: mode %#o gives group or others access; want 0600", path, perm)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxLegacyFile+1))
	if err != nil {
		return LegacyKey{}, fmt.Errorf("keyring: %s: %w", path, err)
	}
	if len(data) > maxLegacyFile {
		return LegacyKey{}, fmt.Errorf("keyring: %s: larger than %d bytes", path, maxLegacyFile)
	}
	block, rest := pem.Decode(data)
	switch {
	case block == nil:
		return LegacyKey{}, fmt.Errorf("keyring: %s: no PEM block", path)
	case block.Type != legacyPEMType:
		return LegacyKey{}, fmt.Errorf("keyring: %s: PEM block is %q, want %q", path, block.Type, legacyPEMType)
	case len(bytes.TrimSpace(rest)) != 0:
		return LegacyKey{}, fmt.Errorf("keyring: %s: data after the PEM block", path)
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return LegacyKey{}, fmt.Errorf("keyring: %s: not a PKCS#8 private key", path)
	}
	if err := checkKey(alg, key); err != nil {
		return LegacyKey{}, fmt.Errorf("keyring: %s: %v", path, err)
	}
	return LegacyKey{Algorithm: alg, Key: key.(crypto.Signer), Created: fi.ModTime()}, nil
}
