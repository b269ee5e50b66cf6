package exchangeclient

import (
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Option configures New. Only this package creates Options.
type Option interface {
	configureClient(*clientConfig)
}

type clientConfig struct {
	issuerURL    string
	source       X509Source
	sourceSet    bool
	workloadAddr string
	serverID     spiffeid.ID
	timeout      time.Duration
}

type optionFunc func(*clientConfig)

func (fn optionFunc) configureClient(c *clientConfig) { fn(c) }

// WithIssuerURL sets the STS issuer URL, for example
// https://sts.example.org:8443. It is required. The token endpoint is the
// issuer URL followed by exchange.PathToken ("/token").
func WithIssuerURL(url string) Option {
	return optionFunc(func(c *clientConfig) { c.issuerURL = url })
}

// WithX509Source makes the client present the SVIDs of src and verify the
// server with its bundles. The client does not close src.
func WithX509Source(src X509Source) Option {
	return optionFunc(func(c *clientConfig) { c.source, c.sourceSet = src, true })
}

// WithWorkloadAPIAddr sets the Workload API address used when no source is
// given with WithX509Source: New then creates a workloadapi.X509Source at
// addr, or at SPIFFE_ENDPOINT_SOCKET when addr is empty, and Close closes
// it. It is ignored when a source is given.
func WithWorkloadAPIAddr(addr string) Option {
	return optionFunc(func(c *clientConfig) { c.workloadAddr = addr })
}

// WithServerID authorizes exactly the server SPIFFE ID id. By default any
// SPIFFE ID in the client's own trust domain is authorized
// (tlsconfig.AuthorizeMemberOf).
func WithServerID(id spiffeid.ID) Option {
	return optionFunc(func(c *clientConfig) { c.serverID = id })
}

// WithTimeout bounds each token request, from dialing to reading the
// response; the default is 10 seconds. It must be positive.
func WithTimeout(d time.Duration) Option {
	return optionFunc(func(c *clientConfig) { c.timeout = d })
}
