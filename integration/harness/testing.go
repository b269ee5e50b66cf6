package harness

import (
	"testing"
)

// StartT is [Start] for tests. Progress goes to t.Logf unless opts.Logf is
// set; an error is fatal. The deployment is stopped by t.Cleanup, and when
// the test has failed by then the tails of the server and agent logs are
// logged first. The start-up, including a possible first build of SPIRE, is
// bounded by the test's context (and so by `go test -timeout`).
func StartT(t testing.TB, opts Options) *SPIRE {
	t.Helper()
	if opts.Logf == nil {
		opts.Logf = t.Logf
	}
	s, err := Start(t.Context(), opts)
	if err != nil {
		t.Fatalf("start SPIRE: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("SPIRE logs:\n%s", s.Logs())
		}
		s.Stop()
	})
	return s
}
