package diskkey

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"

	"github.com/spiffe-sts/spiffe-sts/issuer"
)

const (
	// KeysDir is the directory under the data directory that holds keys.
	KeysDir = "keys"
	// pemType is the PEM block type of a PKCS#8 private key (RFC 7468 §10).
	pemType = "PRIVATE KEY"
	// maxKeyFile bounds how much of a key file is read.
	maxKeyFile = 64 << 10
)

// algorithms maps key file names to the algorithm of the key they hold.
var algorithms = map[string]jwa.SignatureAlgorithm{
	FileName(jwa.ES256()): jwa.ES256(),
	FileName(jwa.EdDSA()): jwa.EdDSA(),
	FileName(jwa.RS256()): jwa.RS256(),
}

// FileName returns the name of the file in dir/keys holding the key for
// alg: the algorithm lowercased, plus ".pem" ("es256.pem").
func FileName(alg jwa.SignatureAlgorithm) string {
	return strings.ToLower(alg.String()) + ".pem"
}

// Open loads every key file in dir/keys, creates the key for alg when it is
// missing, and returns the signer for alg together with the public JWKs of
// the other loaded keys, for issuer.Config.VerificationKeys.
//
// Each key is a PKCS#8 "PRIVATE KEY" PEM file named after its algorithm
// (see FileName), mode 0600, in a directory of mode 0700. Keys are created
// atomically and never overwritten. A file that cannot be read, is not
// PKCS#8 PEM, holds the wrong kind of key for its name or is accessible by
// group or others stops Open with an error naming it, and is left as it is.
// Files whose names do not end in ".pem" are ignored.
func Open(dir string, alg jwa.SignatureAlgorithm) (issuer.Signer, []jwk.Key, error) {
	alg, err := issuer.ParseAlgorithm(alg.String())
	if err != nil {
		return nil, nil, fmt.Errorf("diskkey: %w", err)
	}
	keysDir := filepath.Join(dir, KeysDir)
	if err := os.MkdirAll(keysDir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("diskkey: create key directory: %w", err)
	}
	signers, err := loadAll(keysDir)
	if err != nil {
		return nil, nil, err
	}

	var signer issuer.Signer
	var verification []jwk.Key
	for _, s := range signers {
		if s.Algorithm() == alg {
			signer = s
			continue
		}
		pub, err := issuer.PublicJWK(s)
		if err != nil {
			return nil, nil, fmt.Errorf("diskkey: %w", err)
		}
		verification = append(verification, pub)
	}
	if signer == nil {
		if signer, err = create(keysDir, alg); err != nil {
			return nil, nil, err
		}
	}
	return signer, verification, nil
}

// loadAll loads every key file in keysDir, in name order.
func loadAll(keysDir string) ([]issuer.Signer, error) {
	entries, err := os.ReadDir(keysDir)
	if err != nil {
		return nil, fmt.Errorf("diskkey: read key directory: %w", err)
	}
	var signers []issuer.Signer
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".pem") {
			continue
		}
		path := filepath.Join(keysDir, e.Name())
		alg, ok := algorithms[e.Name()]
		if !ok {
			return nil, fmt.Errorf("diskkey: %s: file name names no supported algorithm (want es256.pem, eddsa.pem or rs256.pem)", path)
		}
		// Opening a FIFO would block, and a symlink could point anywhere.
		if !e.Type().IsRegular() {
			return nil, fmt.Errorf("diskkey: %s: not a regular file", path)
		}
		s, err := load(path, alg)
		if err != nil {
			return nil, err
		}
		signers = append(signers, s)
	}
	return signers, nil
}

// load reads the key for alg from path.
func load(path string, alg jwa.SignatureAlgorithm) (issuer.Signer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("diskkey: %w", err) // *PathError names the file
	}
	defer f.Close()
	// Check the file that was opened, not the name, which could change.
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("diskkey: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("diskkey: %s: not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("diskkey: %s: mode %#o gives group or others access; want 0600", path, perm)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("diskkey: %s: %w", path, err)
	}
	if len(data) > maxKeyFile {
		return nil, fmt.Errorf("diskkey: %s: larger than %d bytes", path, maxKeyFile)
	}
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("diskkey: %s: no PEM block", path)
	}
	if block.Type != pemType {
		return nil, fmt.Errorf("diskkey: %s: PEM block is %q, want %q", path, block.Type, pemType)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, fmt.Errorf("diskkey: %s: data after the PEM block", path)
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("diskkey: %s: not a PKCS#8 private key: %w", path, err)
	}
	cs, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("diskkey: %s: %T cannot sign", path, key)
	}
	s, err := issuer.NewSigner(cs, alg)
	if err != nil {
		return nil, fmt.Errorf("diskkey: %s: %w", path, err)
	}
	return s, nil
}

// create generates a key for alg and stores it in keysDir without ever
// replacing an existing file. If another process created the file first,
// that key is loaded instead.
func create(keysDir string, alg jwa.SignatureAlgorithm) (issuer.Signer, error) {
	key, err := generate(alg)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("diskkey: encode %s key: %w", alg, err)
	}
	signer, err := issuer.NewSigner(key, alg)
	if err != nil {
		return nil, fmt.Errorf("diskkey: %w", err)
	}

	path := filepath.Join(keysDir, FileName(alg))
	// The temporary name does not end in ".pem", so a leftover from a crash
	// is ignored by loadAll.
	tmp, err := os.CreateTemp(keysDir, "."+FileName(alg)+".*.tmp")
	if err != nil {
		return nil, fmt.Errorf("diskkey: create temporary key file: %w", err)
	}
	tmpName := tmp.Name()
	defer os.Remove(tmpName) // the key lives on under path, if linked
	err = tmp.Chmod(0o600)
	if err == nil {
		err = pem.Encode(tmp, &pem.Block{Type: pemType, Bytes: der})
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, fmt.Errorf("diskkey: write %s: %w", tmpName, err)
	}
	// os.Link fails if path exists, so an existing key is never replaced.
	if err := os.Link(tmpName, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return load(path, alg)
		}
		return nil, fmt.Errorf("diskkey: %w", err)
	}
	if err := syncDir(keysDir); err != nil {
		return nil, err
	}
	return signer, nil
}

// generate creates a private key for alg.
func generate(alg jwa.SignatureAlgorithm) (crypto.Signer, error) {
	var key crypto.Signer
	var err error
	switch alg {
	case jwa.ES256():
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case jwa.EdDSA():
		_, key, err = ed25519.GenerateKey(rand.Reader)
	case jwa.RS256():
		key, err = rsa.GenerateKey(rand.Reader, issuer.MinRSABits)
	default:
		err = errors.New("unsupported algorithm")
	}
	if err != nil {
		return nil, fmt.Errorf("diskkey: generate %s key: %w", alg, err)
	}
	return key, nil
}

// syncDir flushes the directory entry of a newly linked file.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("diskkey: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("diskkey: sync %s: %w", dir, err)
	}
	return nil
}
