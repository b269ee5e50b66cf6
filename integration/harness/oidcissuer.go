package harness

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// oidcIssuerReady starts the line oidcissuer prints when it serves.
const oidcIssuerReady = "oidcissuer: serving "

// OIDCIssuer is a running oidcissuer process (integration/oidcissuer): an
// OIDC-style identity provider whose end-user tokens spiffe-sts accepts as
// subject tokens from an external_issuer. Build it with
//
//	bin, err := harness.BuildBinary(ctx, "./integration/oidcissuer", dir, "oidcissuer")
type OIDCIssuer struct {
	*Process
	// URL is the issuer identifier ("iss"), https://127.0.0.1:PORT; the
	// JWKS is at URL/jwks.
	URL string
	// CAFile is the PEM file of the issuer's self-signed TLS certificate.
	CAFile string

	client *http.Client
}

// StartOIDCIssuer starts the oidcissuer binary bin on a free loopback port,
// with its certificate and log (oidcissuer.log) in dir, and waits until it
// serves (at most 30 s or until ctx ends). On error the process is stopped.
func StartOIDCIssuer(ctx context.Context, bin, dir string) (*OIDCIssuer, error) {
	if bin == "" || dir == "" {
		return nil, errors.New("harness: StartOIDCIssuer: bin and dir are required")
	}
	p, err := StartProcess(bin, []string{"-addr", "127.0.0.1:0", "-cert-out", dir}, nil, filepath.Join(dir, "oidcissuer.log"))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		if issuerURL, ok := readyURL(p.Output()); ok {
			o := &OIDCIssuer{Process: p, URL: issuerURL, CAFile: filepath.Join(dir, "ca.pem")}
			if o.client, err = clientTrusting(o.CAFile); err != nil {
				_ = p.Stop()
				return nil, err
			}
			return o, nil
		}
		select {
		case <-p.Exited():
			return nil, fmt.Errorf("harness: oidcissuer exited during start-up:\n%s", p.Output())
		case <-ctx.Done():
			_ = p.Stop()
			return nil, fmt.Errorf("harness: oidcissuer not ready: %w\n%s", ctx.Err(), p.Output())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// readyURL returns the URL of oidcissuer's ready line in output.
func readyURL(output string) (string, bool) {
	for line := range strings.Lines(output) {
		if rest, ok := strings.CutPrefix(line, oidcIssuerReady); ok && strings.HasSuffix(rest, "\n") {
			return strings.TrimSpace(rest), true
		}
	}
	return "", false
}

// clientTrusting returns an HTTP client that trusts the certificates of
// the PEM file caFile only.
func clientTrusting(caFile string) (*http.Client, error) {
	b, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("harness: oidcissuer CA: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("harness: oidcissuer CA: no certificate in %s", caFile)
	}
	return &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}},
	}, nil
}

// IssueToken has the issuer sign a token for the end user sub, as if sub
// had logged in: for the audiences aud, with scope (space-separated; may be
// empty), the RFC 8693 §4.4 may_act claim naming the SPIFFE ID mayAct
// (none when empty), and lifetime ttl (the issuer's default, 5m, when
// zero).
func (o *OIDCIssuer) IssueToken(ctx context.Context, sub string, aud []string, scope string, mayAct string, ttl time.Duration) (string, error) {
	form := url.Values{"sub": {sub}, "aud": aud}
	if scope != "" {
		form.Set("scope", scope)
	}
	if mayAct != "" {
		form.Set("may_act", mayAct)
	}
	if ttl != 0 {
		form.Set("ttl", ttl.String())
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, o.URL+"/token", strings.NewReader(form.Encode()))
	if err != nil {
		return "", fmt.Errorf("harness: oidcissuer token: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := o.client.Do(req)
	if err != nil {
		return "", fmt.Errorf("harness: oidcissuer token: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", fmt.Errorf("harness: oidcissuer token: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("harness: oidcissuer token: %s: %s", resp.Status, strings.TrimSpace(string(body)))
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(body, &tok); err != nil || tok.AccessToken == "" {
		return "", errors.New("harness: oidcissuer token: no access_token in the response")
	}
	return tok.AccessToken, nil
}

// ExternalIssuerHCL returns a spiffe-sts external_issuer block named name
// for this issuer, trusting its JWKS URL through CAFile, for tokens whose
// aud contains audience. Append it to STSOptions.Policy.
func (o *OIDCIssuer) ExternalIssuerHCL(name, audience string) string {
	return fmt.Sprintf(`
external_issuer %q {
  issuer   = %q
  jwks_url = %q
  ca_file  = %q
  audience = %q
}
`, name, o.URL, o.URL+"/jwks", o.CAFile, audience)
}
