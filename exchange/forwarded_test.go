package exchange_test

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/audit"
	"github.com/spiffe-sts/spiffe-sts/exchange"
	"github.com/spiffe-sts/spiffe-sts/exchange/exchangepb"
	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
	"github.com/spiffe-sts/spiffe-sts/internal/forwardedtest"
	"github.com/spiffe-sts/spiffe-sts/spiffeid/forwarded"
)

const ingressID = "spiffe://example.org/ns/ingress/sa/envoy"

// xfccElement is the element Envoy appends for the client certificate c
// (SANITIZE_SET, cert and URI).
func xfccElement(c *x509.Certificate) string { return forwardedtest.XFCC(ingressID, c) }

// withIngress puts the server behind the trusted proxies
// spiffe://example.org/ns/ingress/sa/*, forwarding XFCC.
func withIngress(t testing.TB, trail exchange.AuditSink) func(*exchange.Config) {
	return func(c *exchange.Config) {
		c.Forwarded = forwardedtest.Policy(t, c.X509Bundles, "spiffe://example.org/ns/ingress/sa/*")
		c.Audit = trail
	}
}

// TestForwardedClientCertificate calls /token and the gRPC API over a
// connection presenting Hop, with the certificate of Forward in
// x-forwarded-client-cert (none when nil).
func TestForwardedClientCertificate(t *testing.T) {
	trail := new(memAudit)
	f := newFixture(t, withIngress(t, trail))
	proxy := f.svid(t, ingressID)
	client := f.svid(t, workloadID)
	other := f.svid(t, otherID) // allowed by policy: served as itself, it would get a token
	evil := f.evil.SVID(t, "spiffe://evil.example/ns/prod/sa/web", time.Hour)

	type params struct {
		Hop, Forward *x509svid.SVID
		// Header, when set, replaces the forwarding header.
		Header func(h http.Header)
	}
	type expected struct {
		desc    string // error_description; "" for a token
		boundTo *x509svid.SVID
		proxy   string // proxy_spiffe_id of the audit record
	}
	tests := []struct {
		name             string
		overrideParams   func(*params)
		overrideExpected func(*expected)
	}{
		{name: "trusted proxy forwards the client's certificate: token bound to it"},
		{
			name:           "untrusted hop with the header is refused, never served as the hop",
			overrideParams: func(p *params) { p.Hop = other },
			overrideExpected: func(e *expected) {
				*e = expected{desc: "a forwarded client certificate is accepted only from a trusted proxy"}
			},
		},
		{
			name:           "trusted proxy without the header is not the client",
			overrideParams: func(p *params) { p.Forward = nil },
			overrideExpected: func(e *expected) {
				*e = expected{desc: "the proxy forwarded no client certificate"}
			},
		},
		{
			name:           "header forged by a direct client",
			overrideParams: func(p *params) { p.Hop, p.Forward = client, other },
			overrideExpected: func(e *expected) {
				*e = expected{desc: "a forwarded client certificate is accepted only from a trusted proxy"}
			},
		},
		{
			name:           "header forged by a hop without a valid SVID",
			overrideParams: func(p *params) { p.Hop = evil },
			overrideExpected: func(e *expected) {
				*e = expected{desc: "a forwarded client certificate is accepted only from a trusted proxy"}
			},
		},
		{
			name:             "direct client without the header",
			overrideParams:   func(p *params) { p.Hop, p.Forward = client, nil },
			overrideExpected: func(e *expected) { e.proxy = "" },
		},
		{
			name:           "forwarded certificate of an untrusted trust domain",
			overrideParams: func(p *params) { p.Forward = evil },
			overrideExpected: func(e *expected) {
				*e = expected{desc: "the forwarded client certificate is not a valid X509-SVID"}
			},
		},
		{
			name: "the header twice",
			overrideParams: func(p *params) {
				p.Header = func(h http.Header) {
					h.Add(forwarded.HeaderXFCC, xfccElement(client.Certificates[0]))
					h.Add(forwarded.HeaderXFCC, xfccElement(other.Certificates[0]))
				}
			},
			overrideExpected: func(e *expected) {
				*e = expected{desc: "the forwarded client certificate header is invalid"}
			},
		},
		{
			name: "the other format",
			overrideParams: func(p *params) {
				p.Header = func(h http.Header) {
					h.Set(forwarded.HeaderClientCert, ":"+base64.StdEncoding.EncodeToString(client.Certificates[0].Raw)+":")
				}
			},
			overrideExpected: func(e *expected) {
				*e = expected{desc: "the forwarded client certificate header is invalid"}
			},
		},
	}
	for _, tt := range tests {
		p := params{Hop: proxy, Forward: client}
		if tt.overrideParams != nil {
			tt.overrideParams(&p)
		}
		e := expected{boundTo: client, proxy: ingressID}
		if tt.overrideExpected != nil {
			tt.overrideExpected(&e)
		}
		if e.desc == "" && e.boundTo == nil {
			e.boundTo = p.Hop
		}
		h := http.Header{}
		switch {
		case p.Header != nil:
			p.Header(h)
		case p.Forward != nil:
			h.Set(forwarded.HeaderXFCC, xfccElement(p.Forward.Certificates[0]))
		}
		form := url.Values{"grant_type": {"client_credentials"}, "audience": {apiAud}}

		t.Run(tt.name+"/http", func(t *testing.T) {
			mark := trail.mark()
			req, err := http.NewRequest(http.MethodPost, f.issuerURL+protocol.PathToken, strings.NewReader(form.Encode()))
			if err != nil {
				t.Fatal(err)
			}
			req.Header = h.Clone()
			req.Header.Set("Content-Type", formType)
			resp, err := f.client(p.Hop).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body map[string]any
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatal(err)
			}
			rec := lastRecord(t, trail, mark)
			if e.desc != "" {
				if resp.StatusCode != http.StatusUnauthorized || body["error"] != "invalid_client" || body["error_description"] != e.desc {
					t.Fatalf("got %d %v, want 401 invalid_client %q", resp.StatusCode, body, e.desc)
				}
				if rec.Outcome != audit.OutcomeRefused || rec.Detail == "" {
					t.Errorf("audit record %+v: want a refusal with detail", rec)
				}
				return
			}
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("got %d %v", resp.StatusCode, body)
			}
			checkBound(t, f, body["access_token"].(string), e.boundTo)
			if rec.Caller != e.boundTo.ID.String() || rec.ProxySPIFFEID != e.proxy ||
				rec.X5TS256 != accesstoken.Thumbprint(e.boundTo.Certificates[0]) {
				t.Errorf("audit record caller %q proxy %q x5t %q; want %s, %q", rec.Caller, rec.ProxySPIFFEID, rec.X5TS256, e.boundTo.ID, e.proxy)
			}
		})

		t.Run(tt.name+"/grpc", func(t *testing.T) {
			md := metadata.MD{}
			for k, vs := range h {
				md.Append(strings.ToLower(k), vs...)
			}
			ctx := metadata.NewOutgoingContext(context.Background(), md)
			resp, err := f.GRPCClient(t, p.Hop).Exchange(ctx, &exchangepb.ExchangeRequest{GrantType: "client_credentials", Audience: []string{apiAud}})
			if e.desc != "" {
				st := status.Convert(err)
				if err == nil || errorInfo(t, st).GetReason() != "invalid_client" || st.Message() != "invalid_client: "+e.desc {
					t.Fatalf("got %v, want invalid_client %q", err, e.desc)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			checkBound(t, f, resp.GetAccessToken(), e.boundTo)
		})
	}
}

// TestForwardedClientsShareAConnection sends requests of several clients
// over one connection of the proxy: each token is bound to its own
// client, whatever the connection's cache remembers.
func TestForwardedClientsShareAConnection(t *testing.T) {
	f := newFixture(t, withIngress(t, nil))
	c := f.client(f.svid(t, ingressID))
	form := url.Values{"grant_type": {"client_credentials"}, "audience": {apiAud}}.Encode()
	for _, id := range []string{workloadID, otherID, workloadID, otherID} {
		req, err := http.NewRequest(http.MethodPost, f.issuerURL+protocol.PathToken, strings.NewReader(form))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", formType)
		req.Header.Set(forwarded.HeaderXFCC, xfccElement(f.svid(t, id).Certificates[0]))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body map[string]any
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: %d %v %v", id, resp.StatusCode, body, err)
		}
		checkBound(t, f, body["access_token"].(string), f.svid(t, id))
	}
}

// checkBound verifies raw as a resource server presented with the
// certificate of svid, and its client_id.
func checkBound(t *testing.T, f *fixture, raw string, svid *x509svid.SVID) {
	t.Helper()
	claims, err := f.verifier(apiAud).Verify(context.Background(), raw, svid.Certificates[0])
	if err != nil {
		t.Fatalf("token not bound to %s: %v", svid.ID, err)
	}
	if claims.ClientID != svid.ID.String() || claims.Subject != svid.ID.String() {
		t.Errorf("client_id %q sub %q, want %s", claims.ClientID, claims.Subject, svid.ID)
	}
}

// lastRecord returns the one audit record written since mark.
func lastRecord(t *testing.T, trail *memAudit, mark int) audit.Record {
	t.Helper()
	trail.mu.Lock()
	defer trail.mu.Unlock()
	if len(trail.lines) != mark+1 {
		t.Fatalf("%d audit records, want 1", len(trail.lines)-mark)
	}
	var rec audit.Record
	if err := json.Unmarshal([]byte(trail.lines[mark]), &rec); err != nil {
		t.Fatal(err)
	}
	return rec
}
