//go:build !linux

package harness

import "syscall"

// childSysProcAttr returns nil: only Linux has a parent-death signal.
func childSysProcAttr() *syscall.SysProcAttr { return nil }
