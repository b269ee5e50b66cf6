package harness

import "syscall"

// childSysProcAttr makes a child get SIGKILL when the harness process dies,
// so a crashed or killed test run does not leave SPIRE behind. (Linux sends
// it when the OS thread that forked the child exits; Go keeps threads alive
// unless a goroutine exits while locked to one, so this is a safety net.)
func childSysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
