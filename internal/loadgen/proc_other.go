//go:build !linux

package loadgen

import (
	"errors"
	"os/exec"
	"time"
)

var errNotLinux = errors.New("loadgen: pinning and /proc counters need Linux")

// StartPinned needs Linux.
func StartPinned(cmd *exec.Cmd, cpu int) (<-chan error, error) { return nil, errNotLinux }

// OnCPU needs Linux.
func OnCPU(cpu int, f func() error) error { return errNotLinux }

// ProcStats are a process's resource counters from /proc.
type ProcStats struct {
	CPU     time.Duration
	PeakRSS int64
}

// ReadProcStats needs Linux.
func ReadProcStats(pid int) (ProcStats, error) { return ProcStats{}, errNotLinux }
