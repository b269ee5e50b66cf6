package loadgen

import (
	"os"
	"testing"
	"time"
)

func TestParseStatCPU(t *testing.T) {
	// The command name holds a space and a parenthesis; utime 250, stime 50.
	stat := "4242 (spiffe ) sts) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 1000 1234567 890 18446744073709551615"
	got, err := parseStatCPU(stat)
	if err != nil || got != 3*time.Second {
		t.Errorf("parseStatCPU = %v, %v; want 3s", got, err)
	}
	if _, err := parseStatCPU("4242 (sts) S 1"); err == nil {
		t.Error("a short stat line parsed")
	}
}

func TestParseVmHWM(t *testing.T) {
	got, err := parseVmHWM("Name:\tsts\nVmPeak:\t  100 kB\nVmHWM:\t   2048 kB\nVmRSS:\t 1024 kB\n")
	if err != nil || got != 2<<20 {
		t.Errorf("parseVmHWM = %d, %v; want 2 MiB", got, err)
	}
	if _, err := parseVmHWM("Name:\tsts\n"); err == nil {
		t.Error("a status without VmHWM parsed")
	}
}

func TestReadProcStatsSelf(t *testing.T) {
	s, err := ReadProcStats(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if s.PeakRSS <= 0 {
		t.Errorf("peak RSS %d", s.PeakRSS)
	}
}
