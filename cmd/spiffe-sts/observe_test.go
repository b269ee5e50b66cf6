package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/spiffe-sts/spiffe-sts/audit"
	"github.com/spiffe-sts/spiffe-sts/exchange"
	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
	"github.com/spiffe-sts/spiffe-sts/internal/fakeworkloadapi"
	"github.com/spiffe-sts/spiffe-sts/internal/testca"
	"github.com/spiffe-sts/spiffe-sts/metrics/metricstest"
)

// TestAlertRules checks deploy/monitoring/alerts.yaml with promtool.
func TestAlertRules(t *testing.T) {
	out, err := exec.Command(metricstest.Promtool(t), "check", "rules", filepath.Join("..", "..", "deploy", "monitoring", "alerts.yaml")).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
}

// TestRunObservable runs the server with an audit file and checks, for
// one token request: the X-Request-Id and its audit record, the /metrics
// of the health listener (promtool check metrics, and the series the
// dashboard and alerts use), and the healthcheck command.
func TestRunObservable(t *testing.T) {
	metricstest.Promtool(t) // fail or skip before the server starts
	ca := testca.New(t, "example.org")
	wl := fakeworkloadapi.Start(t, ca, ca.SVID(t, "spiffe://example.org/sts", time.Hour))
	bind, health := freeAddr(t), freeAddr(t)
	auditPath := filepath.Join(t.TempDir(), "audit.log")
	src := runConfig(t, wl.Addr, bind, health) + "\naudit {\n  path     = \"" + auditPath + "\"\n  required = true\n}\n"
	logs, stop := startRun(t, src)
	logs.waitFor(t, logServing)

	roots := x509.NewCertPool()
	roots.AddCert(ca.Cert)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs:            roots,
		Certificates:       []tls.Certificate{tlsCertificate(ca.SVID(t, "spiffe://example.org/ns/prod/sa/web", time.Hour))},
		InsecureSkipVerify: true, // the SVID has no IP SAN; the chain is checked below
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, _, err := x509svid.Verify(cs.PeerCertificates, ca.Bundle())
			return err
		},
	}}}
	defer client.CloseIdleConnections()
	var token string
	var ids []string
	for _, aud := range []string{"spiffe://example.org/api", "spiffe://example.org/db"} {
		resp, err := client.PostForm("https://"+bind+protocol.PathToken, url.Values{"grant_type": {"client_credentials"}, "audience": {aud}})
		if err != nil {
			t.Fatal(err)
		}
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if tok, ok := body["access_token"].(string); ok {
			token = tok
		}
		ids = append(ids, resp.Header.Get(exchange.HeaderRequestID))
	}
	if token == "" {
		t.Fatal("no token issued")
	}

	// The audit file: one record each, issued then refused, by request id.
	f, err := os.Open(auditPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var recs []audit.Record
	for sc := bufio.NewScanner(f); sc.Scan(); {
		if strings.Contains(sc.Text(), token) {
			t.Error("the audit trail holds the raw token")
		}
		var r audit.Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	if len(recs) != 2 || recs[0].RequestID != ids[0] || recs[0].Outcome != audit.OutcomeIssued ||
		recs[1].RequestID != ids[1] || recs[1].Error != "invalid_target" {
		t.Errorf("audit records %+v, request ids %q", recs, ids)
	}

	// /metrics passes promtool and has the series the alerts use.
	resp, err := http.Get("http://" + health + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	exposition, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	metricstest.CheckExposition(t, exposition)
	for _, series := range []string{
		`spiffe_sts_requests_total{grant_type="client_credentials",outcome="ok",transport="http"} 1`,
		`spiffe_sts_requests_total{grant_type="client_credentials",outcome="invalid_target",transport="http"} 1`,
		`spiffe_sts_tokens_issued_total{rule="spiffe://example.org/ns/prod/sa/*"} 1`,
		`spiffe_sts_request_duration_seconds_bucket{grant_type="client_credentials",outcome="ok",transport="http",le="0.0001"}`,
		`spiffe_sts_bundle_confirmation_age_seconds{trust_domain="example.org"}`,
		`spiffe_sts_svid_expiry_timestamp_seconds `,
		`spiffe_sts_keyring_key_info{kid=`,
		`spiffe_sts_keyring_next_rotation_seconds `,
		`spiffe_sts_keyring_store_reachable 1`,
		`spiffe_sts_workload_api_connected `,
		`spiffe_sts_svid_renewal_overdue 0`,
		`spiffe_sts_audit_records_total 2`,
		`spiffe_sts_audit_write_failures_total 0`,
		`spiffe_sts_requests_in_flight 0`,
		`spiffe_sts_requests_total{grant_type="other",outcome="overloaded",transport="http"} 0`,
		`spiffe_sts_introspections_total{outcome="overloaded"} 0`,
	} {
		if !bytes.Contains(exposition, []byte(series)) {
			t.Errorf("/metrics lacks %s", series)
		}
	}

	// healthcheck: ready, then not once the server stops.
	cfgPath := writeConfig(t, src)
	var out, errOut bytes.Buffer
	if code := realMain([]string{"healthcheck", "-config", cfgPath}, &out, &errOut); code != exitOK || out.String() != "ready\n" {
		t.Errorf("healthcheck = %d %q %q, want 0 ready", code, out.String(), errOut.String())
	}
	if err := stop(); err != nil {
		t.Fatalf("run: %v\n%s", err, logs)
	}
	errOut.Reset()
	if code := realMain([]string{"healthcheck", "-shallow", "-config", cfgPath}, &out, &errOut); code != exitError || errOut.Len() == 0 {
		t.Errorf("healthcheck -shallow after stop = %d %q, want 1 and a reason", code, errOut.String())
	}
}
