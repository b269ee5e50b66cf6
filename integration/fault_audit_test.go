//go:build integration

package integration

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe-sts/spiffe-sts/integration/harness"
)

const auditFailures = "spiffe_sts_audit_write_failures_total"

// auditSTS is a spiffe-sts whose audit trail is dir/audit.log, rotated
// before every record (max_size 1 byte), so that every record after the
// first needs a rename in dir and a new file there.
type auditSTS struct {
	*harness.STS
	dir string
}

func (e *env) startAuditSTS(required bool) *auditSTS {
	e.t.Helper()
	dir := filepath.Join(e.t.TempDir(), "audit")
	if err := os.Mkdir(dir, 0o700); err != nil {
		e.t.Fatal(err)
	}
	h, err := harness.StartSTS(e.t.Context(), e.spire, harness.STSOptions{
		Bin: e.stsBin, DataDir: e.t.TempDir(), Dir: e.t.TempDir(), Policy: policyRule,
		ExtraHCL: fmt.Sprintf("audit {\n  path = %q\n  max_size = \"1\"\n  required = %t\n}\n", filepath.Join(dir, "audit.log"), required),
	})
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		_ = h.Stop()
		if e.t.Failed() {
			e.t.Logf("spiffe-sts log:\n%s", h.Output())
		}
	})
	return &auditSTS{STS: h, dir: dir}
}

// block makes the audit directory unusable in a way that also stops
// root, which ignores permissions: the directory is moved away and a
// regular file takes its path, so rotating (rename) and reopening the
// audit file fail with ENOTDIR. unblock puts the directory back.
func (a *auditSTS) block(t *testing.T) {
	t.Helper()
	if err := os.Rename(a.dir, a.dir+".away"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(a.dir, []byte("not a directory\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (a *auditSTS) unblock(t *testing.T) {
	t.Helper()
	if err := os.Remove(a.dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(a.dir+".away", a.dir); err != nil {
		t.Fatal(err)
	}
}

func (a *auditSTS) metric(t *testing.T, name string) float64 {
	t.Helper()
	v, err := a.Metric(t.Context(), name)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func (a *auditSTS) readyz(t *testing.T) (int, string) {
	t.Helper()
	resp, err := http.Get(a.HealthURL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestFaultAuditSinkUnwritable makes the audit trail's directory
// unusable while spiffe-sts runs, for root too, and checks the configured
// behaviour; nothing is lost silently:
//
//   - required = true: decisions are answered 503 temporarily_unavailable,
//     /readyz is 503 and names the audit sink, the failure metric counts
//     every lost record; once the directory is back, /readyz is 200 and
//     tokens are issued again;
//   - required = false: tokens are issued, the failure metric counts
//     every lost record and the log says "audit record not written" for
//     each; /readyz stays 200.
func TestFaultAuditSinkUnwritable(t *testing.T) {
	t.Parallel()
	const lost = 5
	form := "grant_type=client_credentials&audience=" + apiAud
	e := newEnv(t, envOptions{})
	src := e.source()
	c := httpClient(src, false)
	s := &sts{} // for postForm: only its url is used
	post := func(a *auditSTS) (int, map[string]any) {
		s.url = a.URL
		status, body, _ := s.postForm(t, c, form)
		return status, body
	}

	t.Run("required", func(t *testing.T) {
		a := e.startAuditSTS(true)
		if status, body := post(a); status != http.StatusOK {
			t.Fatalf("before: %d %v", status, body)
		}
		before := a.metric(t, auditFailures)
		a.block(t)
		for i := range lost {
			status, body := post(a)
			if status != http.StatusServiceUnavailable || body["error"] != "temporarily_unavailable" {
				t.Fatalf("request %d with the audit trail lost: %d %v, want 503 temporarily_unavailable", i, status, body)
			}
		}
		if got := a.metric(t, auditFailures) - before; got != lost {
			t.Errorf("%s grew by %v for %d lost records", auditFailures, got, lost)
		}
		if status, body := a.readyz(t); status != http.StatusServiceUnavailable || !strings.Contains(body, "audit sink (required) failing") {
			t.Errorf("/readyz with the audit trail lost: %d %q, want 503 naming the audit sink", status, body)
		}
		a.unblock(t)
		waitFor(t, 30*time.Second, "readyz after the audit directory is back", a.Process, func() bool {
			status, _ := a.readyz(t)
			return status == http.StatusOK
		})
		if status, body := post(a); status != http.StatusOK {
			t.Fatalf("after the audit directory is back: %d %v", status, body)
		}
	})

	t.Run("not required", func(t *testing.T) {
		a := e.startAuditSTS(false)
		if status, body := post(a); status != http.StatusOK {
			t.Fatalf("before: %d %v", status, body)
		}
		before := a.metric(t, auditFailures)
		logged := strings.Count(a.Output(), "audit record not written")
		a.block(t)
		for i := range lost {
			if status, body := post(a); status != http.StatusOK {
				t.Fatalf("request %d with the audit trail lost: %d %v, want the token served", i, status, body)
			}
		}
		if got := a.metric(t, auditFailures) - before; got != lost {
			t.Errorf("%s grew by %v for %d lost records", auditFailures, got, lost)
		}
		if got := strings.Count(a.Output(), "audit record not written") - logged; got != lost {
			t.Errorf("%d log lines say a record was not written, want %d", got, lost)
		}
		if status, body := a.readyz(t); status != http.StatusOK {
			t.Errorf("/readyz: %d %q, want 200 (audit not required)", status, body)
		}
		a.unblock(t)
		if status, body := post(a); status != http.StatusOK {
			t.Fatalf("after: %d %v", status, body)
		}
		if got := a.metric(t, auditFailures) - before; got != lost {
			t.Errorf("%s grew by %v after the directory came back, want still %d", auditFailures, got, lost)
		}
	})
}
