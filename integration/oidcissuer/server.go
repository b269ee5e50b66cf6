package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Paths served.
const (
	pathMetadata = "/.well-known/openid-configuration"
	pathJWKS     = "/jwks"
	pathToken    = "/token"
)

// caFileName is the name of the certificate file written to -cert-out.
const caFileName = "ca.pem"

const (
	defaultTTL   = 5 * time.Minute
	maxTTL       = 24 * time.Hour
	maxFormBytes = 64 << 10
)

// options are the command-line flags.
type options struct {
	Addr    string
	Issuer  string
	CertOut string
	Alg     jwa.SignatureAlgorithm
}

func parseAlgorithm(s string) (jwa.SignatureAlgorithm, error) {
	switch s {
	case jwa.ES256().String():
		return jwa.ES256(), nil
	case jwa.RS256().String():
		return jwa.RS256(), nil
	}
	return jwa.EmptySignatureAlgorithm(), fmt.Errorf("unsupported -alg %q: want ES256 or RS256", s)
}

// serve listens on opts.Addr, writes the certificate to opts.CertOut,
// prints the ready line to stdout and serves until ctx ends.
func serve(ctx context.Context, opts options, stdout io.Writer) error {
	host, _, err := net.SplitHostPort(opts.Addr)
	if err != nil {
		return fmt.Errorf("-addr %q: want host:port", opts.Addr)
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("-addr %q: the host must be a loopback IP address", opts.Addr)
	}
	ln, err := net.Listen("tcp", opts.Addr)
	if err != nil {
		return err
	}
	defer ln.Close()
	issuer := opts.Issuer
	if issuer == "" {
		issuer = "https://" + ln.Addr().String()
	}
	s, err := newServer(issuer, opts.Alg, time.Now)
	if err != nil {
		return err
	}
	cert, certPEM, err := selfSignedCertificate(ip, time.Now())
	if err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(opts.CertOut, caFileName), certPEM); err != nil {
		return err
	}

	srv := &http.Server{
		Handler:           s,
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}},
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       time.Minute,
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.ServeTLS(ln, "", "") }()
	if _, err := fmt.Fprintf(stdout, "oidcissuer: serving %s\n", issuer); err != nil {
		_ = srv.Close()
		return err
	}
	select {
	case err := <-serveErr:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(shutdownCtx)
}

// server is the issuer's HTTP handler.
type server struct {
	issuer   string
	alg      jwa.SignatureAlgorithm
	key      jwk.Key // private, with kid and alg
	jwks     []byte
	metadata []byte
	now      func() time.Time
	mux      *http.ServeMux
}

// newServer generates a signing key for alg and returns the handler of an
// issuer whose "iss" is issuer.
func newServer(issuer string, alg jwa.SignatureAlgorithm, now func() time.Time) (*server, error) {
	if u, err := url.Parse(issuer); err != nil || u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("issuer %q is not an https URL", issuer)
	}
	var raw crypto.Signer
	var err error
	switch alg {
	case jwa.ES256():
		raw, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case jwa.RS256():
		raw, err = rsa.GenerateKey(rand.Reader, 2048)
	default:
		return nil, fmt.Errorf("unsupported algorithm %q", alg)
	}
	if err != nil {
		return nil, err
	}
	key, err := jwk.Import(raw)
	if err != nil {
		return nil, err
	}
	thumb, err := key.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, err
	}
	for k, v := range map[string]any{
		jwk.KeyIDKey:     base64.RawURLEncoding.EncodeToString(thumb), // RFC 7638
		jwk.AlgorithmKey: alg,
		jwk.KeyUsageKey:  jwk.ForSignature,
	} {
		if err := key.Set(k, v); err != nil {
			return nil, err
		}
	}
	pub, err := jwk.PublicKeyOf(key)
	if err != nil {
		return nil, err
	}
	set := jwk.NewSet()
	if err := set.AddKey(pub); err != nil {
		return nil, err
	}
	s := &server{issuer: issuer, alg: alg, key: key, now: now}
	if s.jwks, err = json.Marshal(set); err != nil {
		return nil, err
	}
	issuerBase := strings.TrimSuffix(issuer, "/")
	if s.metadata, err = json.Marshal(map[string]any{
		"issuer":                                issuer,
		"jwks_uri":                              issuerBase + pathJWKS,
		"token_endpoint":                        issuerBase + pathToken,
		"response_types_supported":              []string{"id_token"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{alg.String()},
		"token_endpoint_auth_methods_supported": []string{"none"},
		"claims_supported":                      []string{"iss", "sub", "aud", "iat", "nbf", "exp", "jti", "scope", "may_act"},
	}); err != nil {
		return nil, err
	}
	s.mux = http.NewServeMux()
	s.mux.HandleFunc("GET "+pathMetadata, s.serveMetadata)
	s.mux.HandleFunc("GET "+pathJWKS, s.serveJWKS)
	s.mux.HandleFunc("POST "+pathToken, s.serveToken)
	return s, nil
}

// ServeHTTP implements http.Handler.
func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

func (s *server) serveMetadata(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(s.metadata)
}

func (s *server) serveJWKS(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/jwk-set+json")
	_, _ = w.Write(s.jwks)
}

// tokenRequest is the form of POST /token.
type tokenRequest struct {
	Subject  string
	Audience []string
	Scope    string
	TTL      time.Duration
	MayAct   string
}

func parseTokenRequest(form url.Values) (tokenRequest, error) {
	req := tokenRequest{
		Subject:  form.Get("sub"),
		Audience: form["aud"],
		Scope:    strings.Join(strings.Fields(form.Get("scope")), " "),
		MayAct:   form.Get("may_act"),
		TTL:      defaultTTL,
	}
	switch {
	case req.Subject == "":
		return req, errors.New("sub is required")
	case len(req.Audience) == 0:
		return req, errors.New("aud is required")
	}
	for _, aud := range req.Audience {
		if aud == "" {
			return req, errors.New("empty aud")
		}
	}
	if ttl := form.Get("ttl"); ttl != "" {
		d, err := time.ParseDuration(ttl)
		if err != nil || d <= 0 || d > maxTTL {
			return req, fmt.Errorf("ttl %q: want a positive duration of at most %s", ttl, maxTTL)
		}
		req.TTL = d
	}
	if req.MayAct != "" {
		if _, err := spiffeid.FromString(req.MayAct); err != nil {
			return req, fmt.Errorf("may_act %q is not a SPIFFE ID: %v", req.MayAct, err)
		}
	}
	return req, nil
}

func (s *server) serveToken(w http.ResponseWriter, r *http.Request) {
	if !isLoopback(r.RemoteAddr) {
		writeError(w, http.StatusForbidden, "access_denied", "tokens are issued to loopback clients only")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request", "the body is not a form")
		return
	}
	req, err := parseTokenRequest(r.PostForm)
	if err != nil {
		writeError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	token, err := s.issue(req)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "server_error", err.Error())
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"access_token": token,
		"token_type":   "Bearer",
		"expires_in":   int64(req.TTL / time.Second),
	})
}

// issue signs a token for req.
func (s *server) issue(req tokenRequest) (string, error) {
	now := s.now()
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", err
	}
	claims := map[string]any{
		"iss": s.issuer,
		"sub": req.Subject,
		"aud": req.Audience,
		"iat": now.Unix(),
		"nbf": now.Unix(),
		"exp": now.Add(req.TTL).Unix(),
		"jti": base64.RawURLEncoding.EncodeToString(jti),
	}
	if len(req.Audience) == 1 {
		claims["aud"] = req.Audience[0]
	}
	if req.Scope != "" {
		claims["scope"] = req.Scope
	}
	if req.MayAct != "" {
		claims["may_act"] = map[string]string{"sub": req.MayAct} // RFC 8693 §4.4
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	hdr := jws.NewHeaders()
	if err := hdr.Set(jws.TypeKey, "JWT"); err != nil {
		return "", err
	}
	token, err := jws.Sign(payload, jws.WithKey(s.alg, s.key, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		return "", err
	}
	return string(token), nil
}

func writeError(w http.ResponseWriter, status int, code, description string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "error_description": description})
}

// isLoopback reports whether the host of addr (host:port) is a loopback
// IP address.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// selfSignedCertificate returns a TLS certificate for ip and "localhost",
// valid for a day, and its PEM encoding; the certificate is its own CA.
func selfSignedCertificate(ip net.IP, now time.Time) (tls.Certificate, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "oidcissuer test CA"},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{ip},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	return cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// writeFileAtomic writes b to path through a temporary file and a rename,
// so that a reader never sees a partial file.
func writeFileAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".ca-*.pem")
	if err != nil {
		return err
	}
	_, err = tmp.Write(b)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
	}
	return err
}
