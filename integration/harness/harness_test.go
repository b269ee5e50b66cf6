//go:build integration

package harness_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe-sts/spiffe-sts/integration/harness"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// TestSPIRE starts a real SPIRE, registers this test binary by path and
// fetches an X509-SVID and a JWT-SVID for it through the Workload API.
func TestSPIRE(t *testing.T) {
	t0 := time.Now()
	s := harness.StartT(t, harness.Options{})
	t.Logf("Start took %s", time.Since(t0).Round(time.Millisecond))

	if got := s.TrustDomain().Name(); got != "example.org" {
		t.Fatalf("trust domain = %q", got)
	}
	if !strings.HasPrefix(s.WorkloadAPIAddr(), "unix:///") {
		t.Fatalf("WorkloadAPIAddr = %q", s.WorkloadAPIAddr())
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if exe, err = filepath.EvalSymlinks(exe); err != nil {
		t.Fatal(err)
	}
	const id = "spiffe://example.org/harness-test"
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := s.Register(ctx, harness.Entry{
		SPIFFEID:    id,
		Selectors:   []string{"unix:path:" + exe},
		X509SVIDTTL: 30 * time.Second,
	}); err != nil {
		t.Fatal(err)
	}
	out, err := s.ServerCmd(ctx, "entry", "show", "-spiffeID", id)
	if err != nil || !strings.Contains(out, "unix:path:"+exe) {
		t.Fatalf("entry show: %v\n%s", err, out)
	}

	t1 := time.Now()
	source, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(s.WorkloadAPIAddr())))
	if err != nil {
		t.Fatalf("X509 source: %v", err)
	}
	defer source.Close()
	svid, err := source.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("first X509-SVID %s after %s (since Start began: %s); lifetime %s",
		svid.ID, time.Since(t1).Round(time.Millisecond), time.Since(t0).Round(time.Millisecond),
		svid.Certificates[0].NotAfter.Sub(svid.Certificates[0].NotBefore))
	if svid.ID.String() != id {
		t.Fatalf("X509-SVID ID = %s, want %s", svid.ID, id)
	}
	if lt := time.Until(svid.Certificates[0].NotAfter); lt > 31*time.Second {
		t.Errorf("X509-SVID expires in %s, want <= 30s", lt)
	}

	client, err := workloadapi.New(ctx, workloadapi.WithAddr(s.WorkloadAPIAddr()))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	jwt, err := client.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "test"})
	if err != nil {
		t.Fatalf("JWT-SVID: %v", err)
	}
	if jwt.ID.String() != id {
		t.Fatalf("JWT-SVID sub = %s, want %s", jwt.ID, id)
	}
	if sub, _ := jwt.Claims["sub"].(string); sub != id {
		t.Fatalf("JWT-SVID claims sub = %q, want %s", sub, id)
	}
	if len(jwt.Audience) != 1 || jwt.Audience[0] != "test" {
		t.Fatalf("JWT-SVID aud = %v", jwt.Audience)
	}

	if !strings.Contains(s.Logs(), "spire-agent log") {
		t.Errorf("Logs() lacks the agent section")
	}
	dir := s.Dir()
	source.Close()
	client.Close()
	t2 := time.Now()
	s.Stop()
	t.Logf("Stop took %s", time.Since(t2).Round(time.Millisecond))
	s.Stop() // idempotent
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temp root %s still there after Stop: %v", dir, err)
	}
}

// TestProcess checks StartProcess, Output, Exited and Stop on a plain child.
func TestProcess(t *testing.T) {
	dir := t.TempDir()
	p, err := harness.StartProcess("/bin/sh", []string{"-c", `echo hello; echo "$HARNESS_X" >&2; exec sleep 60`},
		[]string{"HARNESS_X=world"}, filepath.Join(dir, "out.log"))
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.Output(), "world") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := p.Output(); got != "hello\nworld\n" {
		t.Fatalf("Output = %q", got)
	}
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Exited():
	default:
		t.Fatal("Exited not closed after Stop")
	}
	if err := p.Stop(); err != nil {
		t.Fatal(err)
	}
}

// TestHelpers checks FreePort and CopyExecutable.
func TestHelpers(t *testing.T) {
	port, err := harness.FreePort()
	if err != nil || port <= 0 {
		t.Fatalf("FreePort = %d, %v", port, err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dst, err := harness.CopyExecutable(exe, t.TempDir(), "copy")
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dst)
	if err != nil || fi.Mode().Perm() != 0o755 || !filepath.IsAbs(dst) {
		t.Fatalf("copy %s: %v %v", dst, fi, err)
	}
}
