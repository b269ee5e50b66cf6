package audit_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/spiffe-sts/spiffe-sts/audit"
)

func TestStdout(t *testing.T) {
	var out bytes.Buffer
	l, err := audit.Open(audit.Config{Path: audit.Stdout, Stdout: &out})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Write(&audit.Record{RequestID: "r1", Outcome: audit.OutcomeRefused, Error: "invalid_target"}); err != nil {
		t.Fatal(err)
	}
	var rec audit.Record
	if err := json.Unmarshal(out.Bytes(), &rec); err != nil || rec.RequestID != "r1" || !strings.HasSuffix(out.String(), "}\n") {
		t.Fatalf("line %q: %v", out.String(), err)
	}
}

// TestRotation writes past max_size repeatedly and checks that at most
// max_files rotated files are kept, newest in path.1.
func TestRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	l, err := audit.Open(audit.Config{Path: path, MaxSize: 200, MaxFiles: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for i := range 20 {
		if err := l.Write(&audit.Record{RequestID: strings.Repeat("x", 60) + string(rune('a'+i))}); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{path, path + ".1", path + ".2"} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Size() > 200 || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: size %d mode %v, want <= 200 and 0600", p, st.Size(), st.Mode().Perm())
		}
	}
	if _, err := os.Stat(path + ".3"); !os.IsNotExist(err) {
		t.Errorf("%s.3 kept: %v", path, err)
	}
	last, _ := os.ReadFile(path)
	if !strings.Contains(string(last), strings.Repeat("x", 60)+"t") {
		t.Errorf("the newest record is not in %s: %q", path, last)
	}
}

// TestLostSink checks that a failed write is returned and counted, that
// Check reports it, and that the sink recovers once the file can be
// reopened.
func TestLostSink(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "audit.log")
	if err := os.Mkdir(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	l, err := audit.Open(audit.Config{Path: path, MaxSize: 100, MaxFiles: 1, Metrics: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.Write(&audit.Record{RequestID: strings.Repeat("a", 80)}); err != nil {
		t.Fatal(err)
	}
	// The directory goes away: the rotation's reopen fails.
	if err := os.RemoveAll(filepath.Dir(path)); err != nil {
		t.Fatal(err)
	}
	if err := l.Write(&audit.Record{RequestID: strings.Repeat("b", 80)}); err == nil {
		t.Fatal("write to a removed directory succeeded")
	}
	if l.Check() == nil {
		t.Error("Check = nil for a lost sink")
	}
	if got := testutil.ToFloat64(failures(t, reg)); got != 1 {
		t.Errorf("spiffe_sts_audit_write_failures_total = %v, want 1", got)
	}
	if err := os.Mkdir(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := l.Check(); err != nil {
		t.Errorf("Check after the directory came back = %v", err)
	}
	if err := l.Write(&audit.Record{RequestID: "c"}); err != nil {
		t.Errorf("write after recovery: %v", err)
	}
}

func failures(t *testing.T, g prometheus.Gatherer) prometheus.Collector {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "spiffe_sts_audit_write_failures_total" {
			c := prometheus.NewCounter(prometheus.CounterOpts{Name: "x"})
			c.Add(mf.GetMetric()[0].GetCounter().GetValue())
			return c
		}
	}
	t.Fatal("spiffe_sts_audit_write_failures_total not registered")
	return nil
}

// BenchmarkWriteParallel writes records from GOMAXPROCS goroutines to
// one Log: with -cpu 1,2 it shows how much of a write is serialized.
func BenchmarkWriteParallel(b *testing.B) {
	l, err := audit.Open(audit.Config{Path: audit.Stdout, Stdout: discard{}})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		r := baseline()
		for pb.Next() {
			_ = l.Write(&r)
		}
	})
}
