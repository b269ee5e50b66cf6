//go:build integration

package integration

import (
	"context"
	"os/exec"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/spiffe-sts/spiffe-sts/integration/harness"
)

// soakLine is the result line of integration/soak.
var soakLine = regexp.MustCompile(`(?m)^soak_s=(\d+) rps=(\d+) rotations=(\d+) errors=(\d+) rss_start_mb=([\d.]+) rss_end_mb=([\d.]+) goroutines_start=(\d+) goroutines_end=(\d+)$`)

// TestSoakShort runs the soak program (make soak) for one minute with a
// 20 s client SVID TTL: at least two rotations, no failed request, and
// the server's RSS and goroutines within the program's tolerance (it
// exits non-zero otherwise). Not parallel, so that the peak it measures
// and the half of it it soaks at are this machine's, not shared with the
// other tests.
func TestSoakShort(t *testing.T) {
	bin, err := harness.BuildBinary(t.Context(), "./integration/soak", t.TempDir(), "soak")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "-duration", "60s", "-warmup", "15s", "-peak-duration", "5s",
		"-svid-ttl", "20s", "-min-rotations", "2").CombinedOutput()
	m := soakLine.FindSubmatch(out)
	if err != nil || m == nil {
		t.Fatalf("soak: %v\n%s", err, out)
	}
	t.Logf("%s", m[0])
	if rotations, _ := strconv.Atoi(string(m[3])); rotations < 2 {
		t.Errorf("%d rotations, want at least 2", rotations)
	}
	if string(m[4]) != "0" {
		t.Errorf("errors=%s, want 0", m[4])
	}
}
