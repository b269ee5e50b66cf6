package issuer

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/lestrrat-go/jwx/v3/jws/jwsbb"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
)

// DefaultTTL is the token lifetime used when Config.DefaultTTL is zero.
const DefaultTTL = 5 * time.Minute

// ErrLifetime is returned by Mint, wrapped with detail, when the token would
// live for less than one second, for example because the bound certificate
// is about to expire.
var ErrLifetime = errors.New("issuer: token lifetime would be under one second")

// Config configures an Issuer. New fills in zero fields and validates it.
type Config struct {
	// IssuerURL identifies the issuer; it is the "iss" claim of every token
	// (RFC 9068 §2.2). Required; an https URL without query or fragment.
	IssuerURL string
	// Keys supplies the signing key, per Mint, and the public key set:
	// StaticKeys(signer, extra...) for fixed keys, NewRingKeys for a
	// rotating key ring. Required.
	Keys KeySource
	// DefaultTTL is the lifetime of a token when Mint is given none;
	// DefaultTTL (5m) when zero. Negative values are rejected.
	DefaultTTL time.Duration
	// Clock returns the current time; time.Now when nil.
	Clock func() time.Time
	// Logger receives debug logs, named "issuer"; nothing is logged when nil.
	Logger hclog.Logger
}

// Issuer mints RFC 9068 JWT access tokens bound to X.509 certificates
// (RFC 8705 §3.1). It is safe for concurrent use.
type Issuer struct {
	issuerURL string
	src       KeySource
	keys      *KeySet
	ttl       time.Duration
	clock     func() time.Time
	log       hclog.Logger
	header    atomic.Pointer[signingHeader] // of the last key that signed
}

// New fills in Config defaults, validates it and builds the public key set.
func New(cfg Config) (*Issuer, error) {
	if cfg.DefaultTTL == 0 {
		cfg.DefaultTTL = DefaultTTL
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if err := validateIssuerURL(cfg.IssuerURL); err != nil {
		return nil, err
	}
	src := cfg.Keys
	if src == nil {
		return nil, errors.New("issuer: Keys is required")
	}
	if cfg.DefaultTTL < 0 {
		return nil, fmt.Errorf("issuer: DefaultTTL must be positive, got %s", cfg.DefaultTTL)
	}

	log := cfg.Logger.Named("issuer")
	if s := src.SigningKey(); s != nil {
		log.Debug("issuer ready", logKeyKID, s.KeyID())
	}
	return &Issuer{
		issuerURL: cfg.IssuerURL,
		src:       src,
		keys:      &KeySet{src: src},
		ttl:       cfg.DefaultTTL,
		clock:     cfg.Clock,
		log:       log,
	}, nil
}

// validateIssuerURL checks the issuer identifier with the one issuer URL
// rule, protocol.CheckIssuerURL: https://host[:port] and nothing more
// (RFC 8414 §2 and §3, which RFC 9068 §2.2 refers to).
func validateIssuerURL(s string) error {
	if err := protocol.CheckIssuerURL(s); err != nil {
		return fmt.Errorf("issuer: IssuerURL %q %w", s, err)
	}
	return nil
}

// buildKeySet returns the public keys of signer and extra.
func buildKeySet(signer Signer, extra []jwk.Key) (*accesstoken.StaticKeySet, error) {
	own, err := PublicJWK(signer)
	if err != nil {
		return nil, err
	}
	set := jwk.NewSet()
	if err := set.AddKey(own); err != nil {
		return nil, fmt.Errorf("issuer: key set: %w", err)
	}
	for i, key := range extra {
		if key == nil {
			return nil, fmt.Errorf("issuer: extra[%d] is nil", i)
		}
		if kid, _ := key.KeyID(); kid == signer.KeyID() {
			// The signer's own key listed again is harmless; another key
			// under its kid is not.
			if !jwk.Equal(own, key) {
				return nil, fmt.Errorf("issuer: extra[%d] has the Signer's kid %q but is a different key", i, kid)
			}
			continue
		}
		if err := set.AddKey(key); err != nil {
			return nil, fmt.Errorf("issuer: extra[%d]: %w", i, err)
		}
	}
	keys, err := accesstoken.NewStaticKeySet(set)
	if err != nil {
		return nil, fmt.Errorf("issuer: key set: %w", err)
	}
	return keys, nil
}

// KeySet returns the public keys of the issuer, read from the key source
// at each use, so it follows key rotation. Serve it as the JWKS document,
// and use it to verify tokens this issuer minted.
func (i *Issuer) KeySet() *KeySet { return i.keys }

// Ready reports whether the issuer can sign now: its key source has an
// active key. It wraps ErrNoSigningKey otherwise.
func (i *Issuer) Ready() error {
	if i.src.SigningKey() == nil {
		return ErrNoSigningKey
	}
	return nil
}

// IssuerURL returns the "iss" value of minted tokens.
func (i *Issuer) IssuerURL() string { return i.issuerURL }

// Mint completes claims and signs them as an RFC 9068 JWT access token.
//
// It sets "iss", "iat", "nbf" (equal to "iat"), a unique "jti" (128 random
// bits, base64url) and the RFC 8705 §3.1 confirmation "cnf": {"x5t#S256"}
// computed from leaf, the certificate the token is bound to. "exp" is the
// earliest of now+ttl (Config.DefaultTTL when ttl <= 0), claims.Expiry when
// it is non-zero (an upper bound set by the caller) and leaf.NotAfter, so a
// token never outlives its certificate. Times are whole seconds.
//
// Mint returns an error when leaf is nil, when claims.Subject,
// claims.ClientID or claims.Audience is empty, and, wrapping ErrLifetime,
// when the token would live less than one second. On success claims holds
// the final values; read claims.Expiry for the "expires_in" of the response.
// On error claims is unchanged.
func (i *Issuer) Mint(ctx context.Context, claims *accesstoken.Claims, leaf *x509.Certificate, ttl time.Duration) (string, error) {
	if err := checkMintInput(claims, leaf); err != nil {
		return "", err
	}
	if err := ctx.Err(); err != nil {
		return "", fmt.Errorf("issuer: %w", err)
	}
	iat := i.clock().Unix()
	exp, err := i.expiry(iat, claims.Expiry, leaf, ttl)
	if err != nil {
		return "", err
	}
	key := i.src.SigningKey()
	if key == nil {
		return "", ErrNoSigningKey
	}
	orig := *claims
	i.complete(claims, leaf, iat, exp)
	token, err := sign(claims, key, &i.header)
	if err != nil {
		*claims = orig
		return "", err
	}
	if i.log.IsDebug() {
		i.log.Debug("minted access token",
			logKeyJTI, claims.JWTID,
			logKeySubject, claims.Subject,
			logKeyX5TS256, claims.Confirmation.X5TS256,
			logKeyKID, key.KeyID(),
		)
	}
	return token, nil
}

// checkMintInput refuses what Mint cannot make a token of.
func checkMintInput(claims *accesstoken.Claims, leaf *x509.Certificate) error {
	switch {
	case claims == nil:
		return errors.New("issuer: claims are nil")
	case leaf == nil:
		return errors.New("issuer: no certificate to bind the token to")
	case claims.Subject == "":
		return errors.New("issuer: claims have no subject")
	case claims.ClientID == "":
		return errors.New("issuer: claims have no client_id")
	case len(claims.Audience) == 0:
		return errors.New("issuer: claims have no audience")
	}
	for _, aud := range claims.Audience {
		if aud == "" {
			return errors.New("issuer: claims have an empty audience value")
		}
	}
	return nil
}

// expiry returns the "exp" of a token issued at iat: the earliest of
// iat+ttl (the default TTL when ttl <= 0), ceiling when it is non-zero
// (the caller's upper bound) and the NotAfter of leaf, the certificate the
// token is bound to. It wraps ErrLifetime when exp would not be after iat.
func (i *Issuer) expiry(iat, ceiling int64, leaf *x509.Certificate, ttl time.Duration) (int64, error) {
	if ttl <= 0 {
		ttl = i.ttl
	}
	exp := iat + int64(ttl/time.Second)
	if ceiling != 0 && ceiling < exp {
		exp = ceiling
	}
	// RFC 8705 §3: a bound token is useless once its certificate expires.
	if notAfter := leaf.NotAfter.Unix(); notAfter < exp {
		exp = notAfter
	}
	if exp <= iat {
		return 0, fmt.Errorf("%w: exp %d is not after iat %d", ErrLifetime, exp, iat)
	}
	return exp, nil
}

// complete sets in c what the issuer sets: "iss", "iat", "nbf" (equal to
// "iat"), "exp", a fresh "jti" and the RFC 8705 §3.1 "cnf" of leaf. It
// works in place, since a copy would be one more allocation per token
// (the claims escape to the JSON encoder); Mint restores the caller's
// values on error.
func (i *Issuer) complete(c *accesstoken.Claims, leaf *x509.Certificate, iat, exp int64) {
	c.Issuer = i.issuerURL
	c.IssuedAt = iat
	c.NotBefore = iat
	c.Expiry = exp
	c.JWTID = newJTI()
	c.Confirmation = accesstoken.Confirmation{X5TS256: accesstoken.Thumbprint(leaf)}
}

// sign encodes c and signs it with key as a JWS compact serialization
// (RFC 7515 §7.1), with jwx's building blocks (jwsbb): the protected
// header of a key never changes, so it is encoded once per key (h
// remembers the last one), and the claims JSON and the signing input are
// built in pooled buffers (signBuffers), so each token costs one
// signature and the returned string.
func sign(c *accesstoken.Claims, key Signer, h *atomic.Pointer[signingHeader]) (string, error) {
	hdr := h.Load()
	if hdr == nil || hdr.kid != key.KeyID() || hdr.alg != key.Algorithm() {
		var err error
		if hdr, err = newSigningHeader(key); err != nil {
			return "", err
		}
		h.Store(hdr)
	}
	sb := signBufferPool.Get().(*signBuffers)
	defer sb.release()
	// Encode writes what json.Marshal returns, and a newline.
	if err := sb.encoder.Encode(c); err != nil {
		return "", fmt.Errorf("issuer: encode claims: %w", err)
	}
	payload := bytes.TrimSuffix(sb.payload.Bytes(), []byte("\n"))
	enc := base64.RawURLEncoding
	buf := append(sb.token[:0], hdr.prefix...)
	buf = enc.AppendEncode(buf, payload)
	sig, err := jwsbb.Sign(signingKey(key), hdr.alg.String(), buf, nil)
	if err != nil {
		return "", fmt.Errorf("issuer: sign token: %w", err)
	}
	// AppendSignature starts a new buffer, dropping buf's content, when
	// buf lacks the capacity: make room first.
	buf = jwsbb.AppendSignature(slices.Grow(buf, 1+enc.EncodedLen(len(sig))), sig, enc)
	sb.token = buf
	return string(buf), nil
}

// signingKey is what sign hands to jwsbb.Sign for key: the in-memory
// ECDSA key itself when key wraps one (NewSigner, GenerateSigner), which
// jwx signs without converting a DER signature back to r‖s, else key as a
// crypto.Signer (an HSM's key, say).
func signingKey(key Signer) any {
	if s, ok := key.(*signer); ok {
		if k, ok := s.Signer.(*ecdsa.PrivateKey); ok {
			return k
		}
	}
	return key
}

// signBuffers are the buffers of one sign call: the claims JSON, its
// encoder, and the token as it is built.
type signBuffers struct {
	payload bytes.Buffer
	encoder *json.Encoder
	token   []byte
}

// maxPooledSignBuffer bounds the buffers kept for reuse: a token is
// under 2 KiB unless its act chain is long, and a buffer grown past this
// by an unusual token is dropped rather than kept.
const maxPooledSignBuffer = 16 << 10

var signBufferPool = sync.Pool{New: func() any {
	sb := new(signBuffers)
	sb.encoder = json.NewEncoder(&sb.payload)
	return sb
}}

// release returns sb to the pool, empty, unless it grew too large.
func (sb *signBuffers) release() {
	if sb.payload.Cap() > maxPooledSignBuffer || cap(sb.token) > maxPooledSignBuffer {
		return
	}
	sb.payload.Reset()
	sb.token = sb.token[:0]
	signBufferPool.Put(sb)
}

// signingHeader is the encoded protected header of one key's tokens,
// with the "." that follows it in the signing input.
type signingHeader struct {
	kid    string
	alg    jwa.SignatureAlgorithm
	prefix []byte
}

// newSigningHeader encodes the JWS protected header of key's tokens: "alg",
// "typ" "at+jwt" (RFC 9068 §2.1) and "kid", which names the key in the JWKS.
func newSigningHeader(key Signer) (*signingHeader, error) {
	hdr := jws.NewHeaders()
	for _, kv := range []struct {
		k string
		v any
	}{{jws.AlgorithmKey, key.Algorithm()}, {jws.TypeKey, accesstoken.Type}, {jws.KeyIDKey, key.KeyID()}} {
		if err := hdr.Set(kv.k, kv.v); err != nil {
			return nil, fmt.Errorf("issuer: set JWS header %q: %w", kv.k, err)
		}
	}
	raw, err := json.Marshal(hdr)
	if err != nil {
		return nil, fmt.Errorf("issuer: encode JWS header: %w", err)
	}
	return &signingHeader{kid: key.KeyID(), alg: key.Algorithm(), prefix: jwsbb.SigningPrefix(nil, raw, base64.RawURLEncoding)}, nil
}

// newJTI returns 128 random bits, unpadded base64url encoded.
func newJTI() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never returns an error; crashes the program instead
	var text [22]byte      // base64.RawURLEncoding.EncodedLen(16), on the stack
	base64.RawURLEncoding.Encode(text[:], b[:])
	return string(text[:])
}
