//go:build integration

package integration

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/spiffe-sts/spiffe-sts/exchange/exchangeclient"
	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
	"github.com/spiffe-sts/spiffe-sts/integration/harness"
)

// staleBundleReason is the readiness line of a stale example.org bundle.
const staleBundleReason = `bundle of trust domain "example.org": last confirmed by the Workload API`

// servingCert returns the certificate spiffe-sts presents in a new TLS
// handshake, authenticating with src; nil when the handshake fails.
func servingCert(src *workloadapi.X509Source, addr string) *x509.Certificate {
	cfg := tlsconfig.MTLSClientConfig(src, src, tlsconfig.AuthorizeID(spiffeid.RequireFromString(stsID)))
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 5 * time.Second}, Config: cfg}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil
	}
	defer conn.Close()
	return conn.(*tls.Conn).ConnectionState().PeerCertificates[0]
}

// countLines counts the lines of log that contain text.
func countLines(log, text string) int {
	n := 0
	for line := range strings.Lines(log) {
		if strings.Contains(line, text) {
			n++
		}
	}
	return n
}

// TestFaultAgentRestart exchanges continuously (client_credentials through
// exchangeclient, the project's client library) while the SPIRE agent is
// killed with SIGKILL, left down for agentDown and restarted with the same
// data directory.
//
// The client is a workload of the same agent. Its own X509Source keeps the
// last SVID it received while the agent is down, and that SVID (default TTL,
// 1h) outlives the outage, so every client call reaches the server with a
// valid certificate: a failed exchange here is the server's failure. The
// server's own SVID (30s TTL) is fresh when the agent is killed, right
// after a rotation, so it too stays valid throughout, and
// bundle_hard_limit (1m) is longer than the outage: no exchange may fail.
// Readiness must follow max_bundle_age (5s): not ready, naming the stale
// bundle, while the agent is down; ready again after the restart. After
// the restart the server picks up the agent's new SVIDs (a re-issue, then a
// rotation), seen as serving certificate changes in new handshakes.
func TestFaultAgentRestart(t *testing.T) {
	t.Parallel()
	const (
		agentDown    = 12 * time.Second
		maxBundleAge = 5 * time.Second
		pollEvery    = maxBundleAge / 3 // bundlePollInterval
	)
	e := newEnv(t, envOptions{stsSVIDTTL: 30 * time.Second})
	s := e.startSTSWith(harness.STSOptions{Policy: policyRule,
		ServerHCL: fmt.Sprintf("  max_bundle_age = %q\n  bundle_hard_limit = \"1m\"", maxBundleAge)})
	src := e.source()
	client := e.client(s, src)
	ctx := t.Context()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("SPIRE logs:\n%s", e.spire.Logs())
		}
	})

	var exchanges, failed, duringOutage int
	var firstErr error
	exchange := func(down bool) {
		callCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		exchanges++
		if down {
			duringOutage++
		}
		if _, err := client.Exchange(callCtx, exchangeclient.Request{Audience: []string{apiAud}}); err != nil {
			failed++
			if firstErr == nil {
				firstErr = err
			}
			t.Logf("exchange %d failed: %v", exchanges, err)
		}
	}
	// step runs one exchange and probes readiness and the serving
	// certificate, every 200ms.
	step := func(down bool) (ready int, reason string, cert *x509.Certificate) {
		exchange(down)
		ready, reason = readyzBody(s.STS)
		cert = servingCert(src, s.Addr)
		select {
		case <-s.proc.Exited():
			t.Fatalf("spiffe-sts exited:\n%s", s.proc.Output())
		case <-time.After(200 * time.Millisecond):
		}
		return ready, reason, cert
	}

	// 1. Wait for a rotation of the server's SVID, so that the outage
	// starts with a fresh one.
	first := servingCert(src, s.Addr)
	if first == nil {
		t.Fatal("no TLS handshake with spiffe-sts")
	}
	var fresh *x509.Certificate
	for deadline := time.Now().Add(45 * time.Second); fresh == nil; {
		if code, reason := readyzBody(s.STS); code != http.StatusOK {
			t.Fatalf("not ready before the fault: %d %s", code, reason)
		}
		if _, _, c := step(false); c != nil && !c.Equal(first) {
			fresh = c
		}
		if time.Now().After(deadline) {
			t.Fatal("no server SVID rotation within 45s")
		}
	}

	// 2. Kill the agent; the server keeps serving on its SVID, and turns
	// not ready once the bundle is older than max_bundle_age.
	if err := e.spire.KillAgent(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	var notReadyAfter time.Duration
	for time.Since(killed) < agentDown {
		code, reason, cert := step(true)
		if code == http.StatusServiceUnavailable && strings.Contains(reason, staleBundleReason) && notReadyAfter == 0 {
			notReadyAfter = time.Since(killed)
			t.Logf("not ready %v after the kill: %s", notReadyAfter.Round(10*time.Millisecond), strings.TrimSpace(reason))
		}
		if cert != nil && !cert.Equal(fresh) {
			t.Errorf("the serving certificate changed while the agent was down")
		}
	}
	if notReadyAfter == 0 {
		t.Errorf("/readyz never named the stale bundle during %v without the agent", agentDown)
	} else if notReadyAfter < maxBundleAge-pollEvery {
		// The last confirmation was at most one poll before the kill.
		t.Errorf("not ready %v after the kill, before max_bundle_age %v less a poll interval", notReadyAfter, maxBundleAge)
	}
	if countLines(s.proc.Output(), "Workload API stream lost; reconnecting") == 0 {
		t.Error("spiffe-sts logged no loss of the Workload API stream")
	}

	// 3. Restart the agent; the server reconnects by itself, is ready
	// again, and serves the SVIDs the agent issues from then on.
	if err := e.spire.StartAgent(ctx); err != nil {
		t.Fatal(err)
	}
	down := time.Since(killed)
	restarted := time.Now()
	var readyAfter time.Duration
	certs := []*x509.Certificate{fresh}
	rotations := 0 // changes past half-life, not re-issues by the restarted agent
	for deadline := time.Now().Add(90 * time.Second); readyAfter == 0 || len(certs) < 2 || rotations == 0; {
		code, _, cert := step(false)
		if code == http.StatusOK && readyAfter == 0 {
			readyAfter = time.Since(restarted)
		}
		if prev := certs[len(certs)-1]; cert != nil && !cert.Equal(prev) {
			// SPIRE rotates past a jittered half-life (at least 45% of the
			// lifetime): a change before 40% is a re-issue.
			rotated := len(certs) > 1 && time.Since(prev.NotBefore) >= 2*prev.NotAfter.Sub(prev.NotBefore)/5
			if rotated {
				rotations++
			}
			certs = append(certs, cert)
			t.Logf("serving certificate %d after the restart (rotation %v): serial %s, NotBefore %s, after %v", len(certs)-1, rotated,
				cert.SerialNumber, cert.NotBefore.Format(time.TimeOnly), time.Since(restarted).Round(10*time.Millisecond))
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the restart: ready after %v, %d new serving certificates and %d rotations within 90s", readyAfter, len(certs)-1, rotations)
		}
	}
	log := s.proc.Output()
	if n := countLines(log, "Workload API stream connected"); n < 2 {
		t.Errorf("spiffe-sts logged %d Workload API stream connections, want one before and one after the restart", n)
	}
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, "Workload API stream") {
			t.Logf("reconnection: %s", line)
		}
	}

	fmt.Printf("fault=agent_restart down_s=%.1f exchanges=%d during_outage=%d failed=%d not_ready_after_s=%.1f ready_again_after_s=%.1f rotations_after_restart=%d\n",
		down.Seconds(), exchanges, duringOutage, failed, notReadyAfter.Seconds(), readyAfter.Seconds(), rotations)
	if failed != 0 {
		t.Errorf("%d of %d exchanges failed; first: %v", failed, exchanges, firstErr)
	}
	if duringOutage == 0 {
		t.Error("no exchange while the agent was down")
	}
}

// faultExchange is the outcome of one raw client_credentials request.
type faultExchange struct {
	at         time.Time
	status     int
	code       string // the RFC 6749 §5.2 error code, if any
	retryAfter string
	err        error // transport failure, or a body that is not JSON
}

// rawExchange sends a client_credentials request with c and decodes the
// answer, keeping what a fail-closed answer must carry.
func rawExchange(ctx context.Context, c *http.Client, s *sts) faultExchange {
	r := faultExchange{at: time.Now()}
	form := url.Values{"grant_type": {"client_credentials"}, "audience": {apiAud}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.url+"/token", strings.NewReader(form))
	if err != nil {
		r.err = err
		return r
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := c.Do(req)
	if err != nil {
		r.err = err
		return r
	}
	defer resp.Body.Close()
	r.status, r.retryAfter = resp.StatusCode, resp.Header.Get("Retry-After")
	raw, _ := io.ReadAll(resp.Body)
	var body struct {
		Error       string `json:"error"`
		AccessToken string `json:"access_token"`
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		r.err = fmt.Errorf("HTTP %d, body not JSON: %q", resp.StatusCode, raw)
		return r
	}
	if resp.StatusCode == http.StatusOK && body.AccessToken == "" {
		r.err = fmt.Errorf("HTTP 200 without an access token: %q", raw)
	}
	r.code = body.Error
	return r
}

// failedClosed reports whether r is the fail-closed answer: 503
// temporarily_unavailable with Retry-After, an RFC 6749 §5.2 JSON body.
func (r faultExchange) failedClosed() bool {
	return r.err == nil && r.status == http.StatusServiceUnavailable && r.code == protocol.ErrTemporarilyUnavailable.Code && r.retryAfter != ""
}

func (r faultExchange) ok() bool { return r.err == nil && r.status == http.StatusOK }

func (r faultExchange) String() string {
	if r.err != nil {
		return r.err.Error()
	}
	return fmt.Sprintf("HTTP %d %s (Retry-After %q)", r.status, r.code, r.retryAfter)
}

// TestFaultSPIREServerDown stops spire-server, the agent staying up, for
// longer than the half-life of the server's SVID (60s TTL: 70s lifetime
// with SPIRE's 10s backdating, half-life 35s).
//
// The agent keeps answering the Workload API from its cache but cannot
// renew the server's SVID: past its renewal deadline (NotBefore + 35s +
// 15s) the answers stop confirming the bundle. Exchanges succeed through
// the half-life and up to the deadline; readiness names the stale bundle
// once max_bundle_age (6s) more has passed; bundle_hard_limit (12s) after
// the last confirmation every exchange is refused with 503
// temporarily_unavailable and Retry-After, as RFC 6749 §5.2 JSON, while
// the SVID is still valid. The client's own SVID has the default TTL (1h)
// and stays valid. When the SPIRE server is back the agent renews the
// overdue SVID, and the server is ready and serves again.
func TestFaultSPIREServerDown(t *testing.T) {
	t.Parallel()
	const (
		maxBundleAge    = 6 * time.Second
		bundleHardLimit = 12 * time.Second
		pollEvery       = maxBundleAge / 3 // bundlePollInterval
		slop            = 3 * time.Second  // scheduling on a loaded machine
	)
	e := newEnv(t, envOptions{stsSVIDTTL: 60 * time.Second})
	s := e.startSTSWith(harness.STSOptions{Policy: policyRule,
		ServerHCL: fmt.Sprintf("  max_bundle_age = %q\n  bundle_hard_limit = %q", maxBundleAge, bundleHardLimit)})
	src := e.source()
	hc := httpClient(src, true)
	ctx := t.Context()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("SPIRE logs:\n%s", e.spire.Logs())
		}
	})

	// 1. Stop the SPIRE server; the SVID served from then on can no
	// longer be renewed.
	if err := e.spire.StopServer(); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	time.Sleep(2 * time.Second) // an SVID issued just before the stop reaches spiffe-sts
	leaf := servingCert(src, s.Addr)
	if leaf == nil {
		t.Fatal("no TLS handshake with spiffe-sts")
	}
	lifetime := leaf.NotAfter.Sub(leaf.NotBefore)
	halfLife := leaf.NotBefore.Add(lifetime / 2)
	overdue := leaf.NotBefore.Add(lifetime/2 + max(lifetime/6, 15*time.Second)) // as cmd/spiffe-sts renewalDeadline
	t.Logf("server SVID serial %s: NotBefore %s, half-life %s, renewal deadline %s, NotAfter %s",
		leaf.SerialNumber, leaf.NotBefore.Format(time.TimeOnly), halfLife.Format(time.TimeOnly), overdue.Format(time.TimeOnly), leaf.NotAfter.Format(time.TimeOnly))
	if time.Until(halfLife) < 5*time.Second {
		t.Fatalf("the server SVID is already %v from its half-life: it was not renewed before the stop", time.Until(halfLife))
	}

	// 2. Exchange and probe readiness every 200ms until the fail-closed
	// answer has held for 2s.
	var results []faultExchange
	var notReadyAt, readyPastHalfLife time.Time
	var firstClosed time.Time
	for firstClosed.IsZero() || time.Since(firstClosed) < 2*time.Second {
		if time.Now().After(leaf.NotAfter.Add(-time.Second)) {
			t.Fatalf("no fail-closed answer before the SVID expired; last: %v", results[len(results)-1])
		}
		r := rawExchange(ctx, hc, s)
		results = append(results, r)
		if r.failedClosed() && firstClosed.IsZero() {
			firstClosed = r.at
		}
		code, reason := readyzBody(s.STS)
		switch {
		case code == http.StatusOK && time.Now().After(halfLife) && readyPastHalfLife.IsZero():
			readyPastHalfLife = time.Now()
		case code == http.StatusServiceUnavailable && strings.Contains(reason, staleBundleReason) && notReadyAt.IsZero():
			notReadyAt = time.Now()
			t.Logf("not ready %v past the renewal deadline: %s", notReadyAt.Sub(overdue).Round(10*time.Millisecond), strings.TrimSpace(reason))
		}
		if c := servingCert(src, s.Addr); c != nil && !c.Equal(leaf) {
			t.Fatal("the server SVID changed while the SPIRE server was down")
		}
		time.Sleep(200 * time.Millisecond)
	}

	// Every exchange before the renewal deadline succeeded, some past the
	// half-life; none failed other than closed; once closed, all are.
	servedPastHalfLife, failedBefore := false, 0
	for _, r := range results {
		switch {
		case r.at.Before(overdue) && !r.ok():
			failedBefore++
			t.Errorf("exchange at %s, before the renewal deadline, failed: %v", r.at.Format(time.TimeOnly), r)
		case r.at.After(firstClosed) && !r.failedClosed():
			t.Errorf("exchange at %s, after failing closed, was not refused: %v", r.at.Format(time.TimeOnly), r)
		case r.at.After(halfLife) && r.ok():
			servedPastHalfLife = true
		case !r.ok() && !r.failedClosed():
			t.Errorf("exchange at %s failed other than closed: %v", r.at.Format(time.TimeOnly), r)
		}
	}
	if !servedPastHalfLife {
		t.Error("no exchange succeeded past the half-life of the server SVID")
	}
	if readyPastHalfLife.IsZero() {
		t.Error("never ready past the half-life")
	}
	// The last confirmation lies in the poll interval before the deadline.
	if lo, hi := overdue.Add(-pollEvery+maxBundleAge-slop), overdue.Add(maxBundleAge+pollEvery+slop); notReadyAt.Before(lo) || notReadyAt.After(hi) {
		t.Errorf("not ready at %s, want between %s and %s", notReadyAt.Format(time.TimeOnly), lo.Format(time.TimeOnly), hi.Format(time.TimeOnly))
	}
	if lo, hi := overdue.Add(-pollEvery+bundleHardLimit-slop), overdue.Add(bundleHardLimit+pollEvery+slop); firstClosed.Before(lo) || firstClosed.After(hi) {
		t.Errorf("failed closed at %s, want between %s and %s", firstClosed.Format(time.TimeOnly), lo.Format(time.TimeOnly), hi.Format(time.TimeOnly))
	}
	if !firstClosed.Before(leaf.NotAfter) {
		t.Error("failed closed only once the SVID had expired")
	}
	if !strings.Contains(s.proc.Output(), "own X509-SVID overdue for renewal") {
		t.Error("spiffe-sts logged no overdue SVID")
	}

	// 3. Restart the SPIRE server: the agent reconnects (its sync backs off
	// to at most 48s), renews the overdue SVID, and spiffe-sts recovers.
	if err := e.spire.StartServer(ctx); err != nil {
		t.Fatal(err)
	}
	down := time.Since(stopped)
	restarted := time.Now()
	var recovered time.Duration
	for deadline := time.Now().Add(2 * time.Minute); recovered == 0; {
		if code, _ := readyzBody(s.STS); code == http.StatusOK {
			if r := rawExchange(ctx, hc, s); r.ok() {
				recovered = time.Since(restarted)
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not recovered 2m after the SPIRE server restart")
		}
		time.Sleep(200 * time.Millisecond)
	}
	hc.CloseIdleConnections()
	for i := range 5 {
		if r := rawExchange(ctx, hc, s); !r.ok() {
			t.Errorf("exchange %d after the recovery: %v", i, r)
		}
	}
	if c := servingCert(src, s.Addr); c == nil || c.Equal(leaf) {
		t.Error("the server does not serve a renewed SVID after the recovery")
	}
	if !strings.Contains(s.proc.Output(), "own X509-SVID renewed; Workload API answers confirm bundles again") {
		t.Error("spiffe-sts logged no renewal")
	}

	fmt.Printf("fault=spire_server_down down_s=%.1f svid_lifetime_s=%.0f exchanges=%d failed_before_deadline=%d served_past_half_life=%v not_ready_after_s=%.1f failed_closed_after_s=%.1f recovered_after_restart_s=%.1f\n",
		down.Seconds(), lifetime.Seconds(), len(results), failedBefore, servedPastHalfLife,
		notReadyAt.Sub(stopped).Seconds(), firstClosed.Sub(stopped).Seconds(), recovered.Seconds())
}
