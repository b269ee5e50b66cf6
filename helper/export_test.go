package helper

// SetIdleHook makes Run call fn each time it is about to wait, its timers
// set, so that a test advances a fake clock only then.
func SetIdleHook(h *Helper, fn func()) { h.idle = fn }
