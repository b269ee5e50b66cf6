package exchangeclient

import (
	"fmt"
	"time"
)

// EventKind says what an Event reports.
type EventKind int

// The kinds of Event.
const (
	// EventObtained: a token was obtained with the original grant for a
	// certificate that had no usable token: the first one, the one for a
	// new certificate when re-binding failed, or one after the previous
	// expired.
	EventObtained EventKind = iota + 1
	// EventRefreshed: a usable token was replaced, with the original grant,
	// before it expired.
	EventRefreshed
	// EventRebound: the grant was re-bound to a new certificate (RFC 8693
	// token exchange of the previous certificate's token).
	EventRebound
	// EventFailed: a token request failed; Err says why.
	EventFailed
	// EventDropped: the certificate passed its NotAfter and its token was
	// dropped.
	EventDropped
)

// String returns the kind's name.
func (k EventKind) String() string {
	switch k {
	case EventObtained:
		return "obtained"
	case EventRefreshed:
		return "refreshed"
	case EventRebound:
		return "rebound"
	case EventFailed:
		return "failed"
	case EventDropped:
		return "dropped"
	default:
		return fmt.Sprintf("EventKind(%d)", int(k))
	}
}

// Event reports something Tokens did; see WithEvents. It never carries a
// token.
type Event struct {
	Kind EventKind
	// Thumbprint is the RFC 8705 §3.1 x5t#S256 of the certificate the
	// token is, or was to be, bound to.
	Thumbprint string
	// Expiry is when the token obtained expires; zero for EventFailed and
	// EventDropped.
	Expiry time.Time
	// Latency is, for EventRebound and for the EventObtained or
	// EventFailed that ends a rotation, the time from noticing the new
	// X509-SVID to holding (or giving up on) its token; otherwise the
	// duration of the token request.
	Latency time.Duration
	// Blocking reports that a caller waited for this request because no
	// usable token was kept for its certificate.
	Blocking bool
	// Err is why the request failed; a protocol.Error when the STS
	// refused it.
	Err error
}
