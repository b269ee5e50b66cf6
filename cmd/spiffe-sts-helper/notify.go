package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"

	"github.com/hashicorp/go-hclog"

	"github.com/spiffe-sts/spiffe-sts/helper"
)

// notifier tells the program using the files about every new set: it runs
// cmd with cmd_args, and it sends renew_signal to the process whose PID is
// in pid_file_name. Failures are logged; the set is written regardless.
func notifier(cfg *config, log hclog.Logger) func(*helper.Set) {
	if cfg.Cmd == "" && cfg.PIDFile == "" {
		return nil
	}
	return func(s *helper.Set) {
		if cfg.Cmd != "" {
			runCommand(cfg, log)
		}
		if cfg.PIDFile != "" {
			if err := signalPIDFile(cfg.PIDFile, cfg.RenewSignal); err != nil {
				log.Warn("signalling the process failed", logKeySignal, cfg.RenewSignal.String(), logKeyError, err)
			} else {
				log.Debug("process signalled", logKeySignal, cfg.RenewSignal.String())
			}
		}
	}
}

func runCommand(cfg *config, log hclog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), cfg.CmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, cfg.Cmd, cfg.CmdArgs...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	err := cmd.Run()
	var exitErr *exec.ExitError
	switch {
	case errors.As(err, &exitErr):
		log.Warn("update command failed", logKeyCommand, cfg.Cmd, logKeyExitCode, exitErr.ExitCode())
	case err != nil:
		log.Warn("update command failed", logKeyCommand, cfg.Cmd, logKeyError, err)
	default:
		log.Debug("update command ran", logKeyCommand, cfg.Cmd)
	}
}

// signalPIDFile sends sig to the process whose PID path holds.
func signalPIDFile(path string, sig syscall.Signal) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil || pid <= 0 {
		return fmt.Errorf("%s does not hold a process ID", path)
	}
	return syscall.Kill(pid, sig)
}
