package exchange

import "time"

// SetKeepaliveMinTime sets the gRPC API's keepalive MinTime of the Servers
// New returns from now, and returns the function that restores it.
func SetKeepaliveMinTime(d time.Duration) (restore func()) {
	old := keepaliveMinTime
	keepaliveMinTime = d
	return func() { keepaliveMinTime = old }
}
