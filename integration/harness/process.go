package harness

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// stopGrace is how long Stop waits after SIGTERM before sending SIGKILL.
const stopGrace = 5 * time.Second

// Process is a child process whose standard output and standard error are
// captured to a log file.
type Process struct {
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
	waitErr error // set before exited is closed

	stopOnce sync.Once
	stopErr  error
}

// StartProcess starts bin with args and the extra environment variables env
// (appended to os.Environ()), with its standard output and standard error
// written to the file logPath (created or truncated). The process does not
// read standard input. It is not tied to any context: call [Process.Stop].
func StartProcess(bin string, args []string, env []string, logPath string) (*Process, error) {
	return startProcess(bin, args, env, logPath, os.O_TRUNC)
}

// startProcess is StartProcess with the log opened with os.O_TRUNC, or
// os.O_APPEND to keep the log of an earlier run of the same process.
func startProcess(bin string, args []string, env []string, logPath string, mode int) (*Process, error) {
	f, err := os.OpenFile(logPath, os.O_CREATE|mode|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, fmt.Errorf("harness: open log: %w", err)
	}
	defer f.Close() // the child has its own copy of the descriptor

	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout = f
	cmd.Stderr = f
	cmd.SysProcAttr = childSysProcAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("harness: start %s: %w", bin, err)
	}
	p := &Process{cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// Pid returns the process ID.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// LogPath returns the path of the file the process's output goes to.
func (p *Process) LogPath() string { return p.logPath }

// Exited returns a channel that is closed when the process has exited.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Err returns the process's exit error as reported by exec.Cmd.Wait (nil for
// a zero exit status). It is only meaningful once [Process.Exited] is closed;
// before that it returns nil.
func (p *Process) Err() error {
	select {
	case <-p.exited:
		return p.waitErr
	default:
		return nil
	}
}

// Signal sends sig to the process. Signalling a process that has already
// exited returns an error wrapping os.ErrProcessDone.
func (p *Process) Signal(sig os.Signal) error {
	return p.cmd.Process.Signal(sig)
}

// Output returns the contents of the process's log file so far.
func (p *Process) Output() string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("<cannot read %s: %v>", p.logPath, err)
	}
	return string(b)
}

// Stop sends SIGTERM, waits up to 5 seconds for the process to exit, then
// sends SIGKILL and waits for it. It is idempotent and safe for concurrent
// use. It returns an error only if the process could not be signalled or did
// not exit; an exit caused by the signals is not an error.
func (p *Process) Stop() error {
	p.stopOnce.Do(func() { p.stopErr = p.stop() })
	return p.stopErr
}

func (p *Process) stop() error {
	select {
	case <-p.exited:
		return nil
	default:
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("harness: SIGTERM pid %d: %w", p.Pid(), err)
	}
	t := time.NewTimer(stopGrace)
	defer t.Stop()
	select {
	case <-p.exited:
		return nil
	case <-t.C:
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("harness: SIGKILL pid %d: %w", p.Pid(), err)
	}
	select {
	case <-p.exited:
		return nil
	case <-time.After(stopGrace):
		return fmt.Errorf("harness: pid %d did not exit after SIGKILL", p.Pid())
	}
}
