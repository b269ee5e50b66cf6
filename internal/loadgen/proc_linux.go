package loadgen

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// StartPinned starts cmd with its CPU affinity set to the one core cpu, so
// that every thread of it runs there. The child inherits the affinity of
// the thread that forks it: a goroutine locks itself to a thread, pins
// that thread, starts cmd and waits for it there. The child is sent
// SIGKILL if that thread, and so this process, dies first. exited yields
// cmd.Wait's error once the child has exited.
func StartPinned(cmd *exec.Cmd, cpu int) (exited <-chan error, err error) {
	if cpu < 0 || cpu >= runtime.NumCPU() {
		return nil, fmt.Errorf("loadgen: no CPU %d (this machine has %d)", cpu, runtime.NumCPU())
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	started, done := make(chan error, 1), make(chan error, 1)
	go func() {
		// Never unlocked: the pinned thread ends with this goroutine.
		runtime.LockOSThread()
		var set unix.CPUSet
		set.Set(cpu)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			started <- fmt.Errorf("loadgen: pinning to CPU %d: %w", cpu, err)
			return
		}
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		done <- cmd.Wait()
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	var got unix.CPUSet
	if err := unix.SchedGetaffinity(cmd.Process.Pid, &got); err != nil || got.Count() != 1 || !got.IsSet(cpu) {
		_ = cmd.Process.Kill()
		return nil, fmt.Errorf("loadgen: the child is not pinned to CPU %d (%v)", cpu, err)
	}
	return done, nil
}

// userHZ is the unit of /proc/PID/stat's times (USER_HZ, 100 on Linux).
const userHZ = 100

// ProcStats are a process's resource counters from /proc.
type ProcStats struct {
	// CPU is user plus system time (/proc/PID/stat utime+stime, all
	// threads), with a resolution of 10 ms.
	CPU time.Duration
	// PeakRSS is the peak resident set size in bytes (VmHWM).
	PeakRSS int64
}

// ReadProcStats reads pid's counters.
func ReadProcStats(pid int) (ProcStats, error) {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ProcStats{}, fmt.Errorf("loadgen: %w", err)
	}
	cpu, err := parseStatCPU(string(stat))
	if err != nil {
		return ProcStats{}, err
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return ProcStats{}, fmt.Errorf("loadgen: %w", err)
	}
	rss, err := parseVmHWM(string(status))
	if err != nil {
		return ProcStats{}, err
	}
	return ProcStats{CPU: cpu, PeakRSS: rss}, nil
}

// parseStatCPU returns utime+stime (fields 14 and 15 of proc(5)) of a
// /proc/PID/stat line. The command name (field 2) may hold spaces and
// parentheses, so the fields are counted after its last ')'.
func parseStatCPU(stat string) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, fmt.Errorf("loadgen: malformed /proc stat")
	}
	f := strings.Fields(stat[i+1:]) // f[0] is field 3
	if len(f) < 13 {
		return 0, fmt.Errorf("loadgen: malformed /proc stat")
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("loadgen: malformed /proc stat")
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// parseVmHWM returns VmHWM of /proc/PID/status in bytes.
func parseVmHWM(status string) (int64, error) {
	for line := range strings.Lines(status) {
		rest, ok := strings.CutPrefix(line, "VmHWM:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			break
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			break
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("loadgen: no VmHWM in /proc status")
}
