//go:build integration

package integration

import (
	"os"
	"syscall"
)

// fileUID is the owner of the file fi describes (Linux).
func fileUID(fi os.FileInfo) uint32 { return fi.Sys().(*syscall.Stat_t).Uid }
