//go:build unix

package filestore

import (
	"fmt"
	"os"
	"syscall"
)

// checkOwner refuses a ring file that another user owns: that user could
// replace the keys this server signs with, whatever the mode says.
func checkOwner(path string, fi os.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	if euid := os.Geteuid(); int(st.Uid) != euid {
		return fmt.Errorf("filestore: %s: owned by uid %d; want %d, the uid spiffe-sts runs as", path, st.Uid, euid)
	}
	return nil
}
