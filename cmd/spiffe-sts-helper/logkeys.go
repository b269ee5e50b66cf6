package main

// Log keys of the command; tokens and keys are never logged.
const (
	logKeyAddress  = "address"
	logKeyConfig   = "config"
	logKeyCommand  = "command"
	logKeyPID      = "pid"
	logKeySignal   = "signal"
	logKeyError    = "error"
	logKeyDir      = "directory"
	logKeyTokens   = "tokens"
	logKeyOneShot  = "one_shot"
	logKeyX5TS256  = "x5t_s256"
	logKeyExitCode = "exit_code"
)
