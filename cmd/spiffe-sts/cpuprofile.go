//go:build stsprofile

package main

import (
	"fmt"
	"os"
	"runtime/pprof"
)

// cpuProfileEnv names the file that a binary built with -tags stsprofile
// writes its CPU profile (runtime/pprof) to, from start-up to exit. Only
// measurement tools build with the tag (integration/loadtest -cpuprofile);
// release builds have no such hook.
const cpuProfileEnv = "SPIFFE_STS_CPUPROFILE"

func init() {
	path := os.Getenv(cpuProfileEnv)
	if path == "" {
		return
	}
	f, err := os.Create(path)
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "spiffe-sts: %s: %v\n", cpuProfileEnv, err)
		os.Exit(exitError)
	}
	stopProfile = func() {
		pprof.StopCPUProfile()
		_ = f.Close()
	}
}
