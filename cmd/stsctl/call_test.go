package main

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/internal/fakeworkloadapi"
	"github.com/spiffe-sts/spiffe-sts/internal/ststest"
)

func TestCall(t *testing.T) {
	const rsID = "spiffe://example.org/ns/prod/sa/orders"
	s := ststest.Start(t, nil)
	ctx := context.Background()
	workload := s.WorkloadSVID(t, ststest.WorkloadID)
	wl := fakeworkloadapi.Start(t, s.CA, workload)

	// A resource server that accepts tokens bound to the connection's
	// client certificate.
	rsSVID := s.CA.SVID(t, rsID, time.Hour)
	verifier := s.Verifier(ststest.APIAudience)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		TLSConfig: tlsconfig.MTLSServerConfig(rsSVID, s.CA.Bundle(), tlsconfig.AuthorizeAny()),
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			raw := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
			if _, err := verifier.Verify(r.Context(), raw, r.TLS.PeerCertificates[0]); err != nil {
				w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
				http.Error(w, "refused", http.StatusUnauthorized)
				return
			}
			_, _ = w.Write([]byte(`{"orders":[]}`))
		}),
	}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })

	mint := func(t *testing.T, boundTo string) string {
		claims := accesstoken.Claims{Subject: ststest.WorkloadID, ClientID: ststest.WorkloadID, Audience: accesstoken.Audience{ststest.APIAudience}}
		raw, err := s.Issuer.Mint(ctx, &claims, s.WorkloadSVID(t, boundTo).Certificates[0], time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(path, []byte(raw), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	tests := []struct {
		name       string
		boundTo    string
		overrideID string
		expectCode int
		expectOut  string
	}{
		{name: "token bound to this workload", boundTo: ststest.WorkloadID, expectCode: exitOK, expectOut: "200 OK"},
		{name: "stolen token bound to another workload", boundTo: ststest.OtherID, expectCode: exitInvalid, expectOut: `WWW-Authenticate: Bearer error="invalid_token"`},
		{name: "wrong server ID", boundTo: ststest.WorkloadID, overrideID: "spiffe://example.org/evil", expectCode: exitEnv},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := rsID
			if tt.overrideID != "" {
				id = tt.overrideID
			}
			var stdout, stderr bytes.Buffer
			code := run(ctx, []string{"call", "-url", "https://" + ln.Addr().String() + "/orders", "-server-id", id,
				"-socket", wl.Addr, "-token-file", mint(t, tt.boundTo)}, strings.NewReader(""), &stdout, &stderr)
			if code != tt.expectCode || !strings.Contains(stdout.String(), tt.expectOut) {
				t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout.String(), stderr.String())
			}
		})
	}
	var stderr bytes.Buffer
	if code := run(ctx, []string{"call", "-url", "http://x"}, nil, &bytes.Buffer{}, &stderr); code != exitUsage {
		t.Fatalf("usage error: exit %d", code)
	}
}
