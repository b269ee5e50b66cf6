package metricstest

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Promtool returns the path of promtool. It fails the test when promtool
// is missing (.ci/install-packages installs Debian's prometheus, which
// ships it), unless SPIFFE_STS_SKIP_PROMTOOL=1 says to skip.
func Promtool(t testing.TB) string {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err == nil {
		return path
	}
	if os.Getenv("SPIFFE_STS_SKIP_PROMTOOL") == "1" {
		t.Skip("promtool not installed; skipped as SPIFFE_STS_SKIP_PROMTOOL=1 asks")
	}
	t.Fatal("promtool not found on PATH: run .ci/install-packages (Debian package prometheus), or set SPIFFE_STS_SKIP_PROMTOOL=1 to skip this test")
	return ""
}

// CheckExposition runs `promtool check metrics` on exposition, metrics in
// the Prometheus text format, and fails the test on any complaint.
func CheckExposition(t testing.TB, exposition []byte) {
	t.Helper()
	cmd := exec.Command(Promtool(t), "check", "metrics")
	cmd.Stdin = bytes.NewReader(exposition)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s\n--- exposition ---\n%s", err, out, exposition)
	}
}

// Check runs CheckExposition on what g exposes in the text format, as a
// /metrics handler serves it.
func Check(t testing.TB, g prometheus.Gatherer) {
	t.Helper()
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorHandling: promhttp.PanicOnError}).
		ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("/metrics answered %d: %s", rec.Code, rec.Body)
	}
	CheckExposition(t, rec.Body.Bytes())
}
