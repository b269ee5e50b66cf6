package loadgen

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
)

// Error classes of failures that carry no OAuth error code.
const (
	// ClassTransport: no answer (connection refused or reset, TLS, timeout).
	ClassTransport = "transport"
	// ClassCanceled: the run was stopped while the request was in flight.
	ClassCanceled = "canceled"
	// ClassBadResponse: a success status without an access token.
	ClassBadResponse = "bad_response"
)

// maxResponseBytes bounds a token response read by the loader.
const maxResponseBytes = 64 << 10

// HTTPClient sends token requests over HTTP, one keep-alive connection per
// worker.
type HTTPClient struct {
	tokenURL   string
	transports []*http.Transport
	clients    []*http.Client
	bodies     []string
}

// NewHTTP returns a client of target's token endpoint (RFC 6749 §3.2) with
// conns connections over mTLS with tlsConfig, sending grant. HTTP/1.1
// unless http2.
func NewHTTP(target Target, tlsConfig *tls.Config, conns int, grant Grant, http2 bool) *HTTPClient {
	c := &HTTPClient{tokenURL: target.URL + protocol.PathToken, bodies: grant.forms()}
	for range max(conns, 1) {
		tr := &http.Transport{
			DialContext:         func(ctx context.Context, _, _ string) (net.Conn, error) { return target.dial(ctx) },
			TLSClientConfig:     tlsConfig.Clone(),
			MaxConnsPerHost:     1,
			MaxIdleConnsPerHost: 1,
			ForceAttemptHTTP2:   http2,
		}
		if !http2 {
			tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		}
		c.transports = append(c.transports, tr)
		c.clients = append(c.clients, &http.Client{Transport: tr})
	}
	return c
}

// Do is a DoFunc.
func (c *HTTPClient) Do(ctx context.Context, conn, seq int) string {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.tokenURL, strings.NewReader(c.bodies[seq%len(c.bodies)]))
	if err != nil {
		return ClassTransport
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := c.clients[conn%len(c.clients)].Do(req)
	if err != nil {
		return transportClass(ctx, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return transportClass(ctx, err)
	}
	return classifyHTTP(resp.StatusCode, raw)
}

// classifyHTTP returns "" for a token response, the OAuth error code of an
// error response (RFC 6749 §5.2), or http_<status>.
func classifyHTTP(status int, body []byte) string {
	var r struct {
		AccessToken string `json:"access_token"`
		Error       string `json:"error"`
	}
	decoded := json.Unmarshal(body, &r) == nil
	switch {
	case status == http.StatusOK && decoded && r.AccessToken != "":
		return ""
	case status == http.StatusOK:
		return ClassBadResponse
	case decoded && r.Error != "":
		return r.Error
	}
	return "http_" + strconv.Itoa(status)
}

func transportClass(ctx context.Context, err error) string {
	if ctx.Err() != nil || errors.Is(err, context.Canceled) {
		return ClassCanceled
	}
	return ClassTransport
}

// Close closes the connections.
func (c *HTTPClient) Close() {
	for _, tr := range c.transports {
		tr.CloseIdleConnections()
	}
}
