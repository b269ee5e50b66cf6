//go:build integration

package integration

import (
	"errors"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe-sts/spiffe-sts/exchange/exchangeclient"
	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
)

// TestPolicyReload reloads the policy of the running spiffe-sts with
// SIGHUP while a workload keeps exchanging: a narrowed policy takes effect
// without a restart and without a failed request, and a bad configuration
// is refused while the policy in force keeps serving.
func TestPolicyReload(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	s := e.startSTS(0, "", policyRule)
	c := e.client(s, e.source())
	ctx := t.Context()
	pid := s.proc.Pid()

	var stop atomic.Bool
	var requests atomic.Int64
	var mu sync.Mutex
	var failures []error
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for !stop.Load() {
				_, err := c.Exchange(ctx, exchangeclient.Request{Audience: []string{apiAud}, Scope: []string{"read"}})
				requests.Add(1)
				if err != nil {
					mu.Lock()
					failures = append(failures, err)
					mu.Unlock()
				}
			}
		})
	}
	writeAllowed := func() bool {
		_, err := c.Exchange(ctx, exchangeclient.Request{Audience: []string{apiAud}, Scope: []string{"write"}})
		if err != nil && !errors.Is(err, protocol.ErrInvalidScope) {
			t.Fatalf("unexpected error: %v", err)
		}
		return err == nil
	}
	reload := func(config string, wantLog string) {
		t.Helper()
		if err := os.WriteFile(s.ConfigPath, []byte(config), 0o600); err != nil {
			t.Fatal(err)
		}
		before := strings.Count(s.proc.Output(), wantLog)
		if err := s.proc.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for strings.Count(s.proc.Output(), wantLog) == before {
			if time.Now().After(deadline) {
				t.Fatalf("no %q after SIGHUP:\n%s", wantLog, s.proc.Output())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	if !writeAllowed() {
		t.Fatal("write refused before any reload")
	}
	original, err := os.ReadFile(s.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	narrowed := strings.Replace(string(original), `scopes         = ["read", "write"]`, `scopes         = ["read"]`, 1)
	if narrowed == string(original) {
		t.Fatal("the test's policy text changed; cannot narrow it")
	}
	const cycles = 5
	for range cycles {
		reload(narrowed, "policy reloaded")
		if writeAllowed() {
			t.Fatal("write still granted after the narrowed policy was reloaded")
		}
		reload(string(original)+"\npolicy {\n", "configuration reload failed; keeping the current policy")
		if writeAllowed() {
			t.Fatal("a bad configuration replaced the policy in force")
		}
		reload(string(original), "policy reloaded")
		if !writeAllowed() {
			t.Fatal("write refused after the original policy was reloaded")
		}
	}

	stop.Store(true)
	wg.Wait()
	if s.proc.Pid() != pid {
		t.Fatal("spiffe-sts restarted")
	}
	select {
	case <-s.proc.Exited():
		t.Fatalf("spiffe-sts exited:\n%s", s.proc.Output())
	default:
	}
	t.Logf("%d exchanges during %d reloads", requests.Load(), 3*cycles)
	if len(failures) > 0 {
		t.Fatalf("%d of %d exchanges failed during reloads; first: %v", len(failures), requests.Load(), failures[0])
	}
}
