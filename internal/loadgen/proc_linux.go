package loadgen

import (
	"errors"
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
// that thread, starts cmd, and gives the thread its affinity back. The
// child is sent SIGKILL if this process dies first. exited yields
// cmd.Wait's error once the child has exited.
func StartPinned(cmd *exec.Cmd, cpu int) (exited <-chan error, err error) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := OnCPU(cpu, cmd.Start); err != nil {
		if cmd.Process != nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		return nil, err
	}
	var got unix.CPUSet
	if err := unix.SchedGetaffinity(cmd.Process.Pid, &got); err != nil || got.Count() != 1 || !got.IsSet(cpu) {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return nil, fmt.Errorf("loadgen: the child is not pinned to CPU %d (%v)", cpu, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	return done, nil
}

// OnCPU runs f on a thread pinned to the one core cpu, then gives the
// thread its affinity back and returns it to the scheduler; it returns
// f's error. The thread must outlive f: Pdeathsig fires when the thread
// that forked a child exits (as a thread locked at goroutine exit does),
// and the runtime may have forked other children from this same thread.
// A thread whose affinity cannot be restored is left to end with its
// goroutine rather than pin whatever runs on it next.
func OnCPU(cpu int, f func() error) error {
	// runtime.NumCPU counts only the CPUs this process may run on, and a
	// pinned loader may pin its server to another core, so a CPU that does
	// not exist is left to sched_setaffinity to refuse.
	if cpu < 0 {
		return fmt.Errorf("loadgen: no CPU %d", cpu)
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		var orig, set unix.CPUSet
		if err := unix.SchedGetaffinity(0, &orig); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("loadgen: reading the CPU affinity: %w", err)
			return
		}
		set.Set(cpu)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("loadgen: pinning to CPU %d: %w", cpu, err)
			return
		}
		err := f()
		if rerr := unix.SchedSetaffinity(0, &orig); rerr != nil {
			errc <- errors.Join(err, fmt.Errorf("loadgen: restoring the CPU affinity: %w", rerr))
			return
		}
		runtime.UnlockOSThread()
		errc <- err
	}()
	return <-errc
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
