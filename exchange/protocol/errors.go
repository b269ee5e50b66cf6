package protocol

import (
	"fmt"
	"net/http"
	"strconv"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Error is an OAuth 2.0 error response (RFC 6749 §5.2, RFC 8693 §2.2.2),
// as the server sends it and the client returns it. Use the sentinels and
// WithDescription; compare with errors.Is, which matches on Code. Its
// Error text is "exchange: <code>: <description>": a refusal of the token
// exchange.
type Error struct {
	Code        string `json:"error"`
	Description string `json:"error_description,omitempty"`
	// RetryAfter is how long a temporarily_unavailable refusal asks the
	// caller to wait (see RetryAfterSeconds); zero for the default,
	// RetryAfter seconds. It travels as the HTTP Retry-After header and
	// a gRPC RetryInfo detail, not in the JSON body.
	RetryAfter time.Duration `json:"-"`
	// RateLimited marks the refusal of a caller over its rate limit (see
	// RateLimited): HTTP 429 and gRPC ResourceExhausted.
	RateLimited bool `json:"-"`
}

// The error codes of RFC 6749 §5.2 and RFC 8693 §2.2.2.
var (
	ErrInvalidRequest       = Error{Code: "invalid_request"}
	ErrInvalidClient        = Error{Code: "invalid_client"}
	ErrInvalidGrant         = Error{Code: "invalid_grant"}
	ErrUnauthorizedClient   = Error{Code: "unauthorized_client"}
	ErrUnsupportedGrantType = Error{Code: "unsupported_grant_type"}
	ErrInvalidScope         = Error{Code: "invalid_scope"}
	ErrInvalidTarget        = Error{Code: "invalid_target"}
	// ErrServerError reports a failure on the server's side; its description
	// never carries internal detail.
	ErrServerError = Error{Code: "server_error"}
	// ErrTemporarilyUnavailable (RFC 6749 §4.1.2.1, used here at the token
	// endpoint too) refuses a request the server cannot judge safely now:
	// its trust material is stale or its audit sink is lost. The caller
	// retries after RetryAfter.
	ErrTemporarilyUnavailable = Error{Code: "temporarily_unavailable"}
)

// RetryAfter is the delay, in seconds, a temporarily_unavailable response
// asks for (HTTP Retry-After, RFC 9110 §10.2.3; gRPC trailer retry-after)
// unless its Error.RetryAfter says otherwise.
const RetryAfter = 5

// MaxRetryAfter caps the delay an Error asks for: a caller's rate is at
// least one request an hour (spiffeid.MinRatePerSecond), so no bucket
// needs longer to hold a token.
const MaxRetryAfter = time.Hour

// RateLimited is the refusal of a caller over its rate limit:
// temporarily_unavailable, as RFC 6749 §5.2 has no code of its own for
// it, sent as HTTP 429 Too Many Requests (RFC 6585 §4) or gRPC
// ResourceExhausted, asking the caller to wait retryAfter.
func RateLimited(retryAfter time.Duration) Error {
	return Error{Code: ErrTemporarilyUnavailable.Code, RetryAfter: retryAfter, RateLimited: true}
}

// WithRetryAfter returns a copy of e asking the caller to wait d.
func (e Error) WithRetryAfter(d time.Duration) Error {
	e.RetryAfter = d
	return e
}

// RetryAfterSeconds is the Retry-After value of e, in whole seconds
// (RFC 9110 §10.2.3): RetryAfter rounded up, at least 1 and at most
// MaxRetryAfter, or the default RetryAfter when e has none.
func (e Error) RetryAfterSeconds() int {
	if e.RetryAfter <= 0 {
		return RetryAfter
	}
	// Capped before rounding up, which would overflow near MaxInt64.
	d := min(e.RetryAfter, MaxRetryAfter)
	return int(max(1, (d+time.Second-1)/time.Second))
}

// RetryAfterHeader is RetryAfterSeconds as the Retry-After field value.
func (e Error) RetryAfterHeader() string {
	return strconv.Itoa(e.RetryAfterSeconds())
}

// WithDescription returns a copy of e with a human-readable description.
// Descriptions must help the caller and reveal nothing internal.
func (e Error) WithDescription(format string, args ...any) Error {
	e.Description = fmt.Sprintf(format, args...)
	return e
}

func (e Error) Error() string {
	if e.Description == "" {
		return "exchange: " + e.Code
	}
	return "exchange: " + e.Code + ": " + e.Description
}

// Is reports whether target is an Error with the same code.
func (e Error) Is(target error) bool {
	t, ok := target.(Error)
	return ok && t.Code == e.Code
}

// HTTPStatus is the status code of the error response: 401 for
// invalid_client (RFC 6749 §5.2), 500 for server_error, 503 for
// temporarily_unavailable (sent with Retry-After) or 429 when it is
// RateLimited (RFC 6585 §4), 400 otherwise.
func (e Error) HTTPStatus() int {
	switch e.Code {
	case ErrTemporarilyUnavailable.Code:
		if e.RateLimited {
			return http.StatusTooManyRequests
		}
		return http.StatusServiceUnavailable
	case ErrInvalidClient.Code:
		return http.StatusUnauthorized
	case ErrServerError.Code:
		return http.StatusInternalServerError
	default:
		return http.StatusBadRequest
	}
}

// ErrorDomain is the google.rpc.ErrorInfo domain of the gRPC statuses that
// carry an Error.
const ErrorDomain = "spiffe-sts"

// metadataDescription is the ErrorInfo metadata key of the description.
const metadataDescription = "error_description"

// GRPCCode is the gRPC status code of the error: Unauthenticated for
// invalid_client, PermissionDenied for invalid_grant and
// unauthorized_client, Internal for server_error, Unavailable for
// temporarily_unavailable (a retryable code; ResourceExhausted when it is
// RateLimited) and InvalidArgument for
// the malformed or unacceptable requests (invalid_request, invalid_scope,
// invalid_target, unsupported_grant_type) and any other code.
func (e Error) GRPCCode() codes.Code {
	switch e.Code {
	case ErrInvalidClient.Code:
		return codes.Unauthenticated
	case ErrInvalidGrant.Code, ErrUnauthorizedClient.Code:
		return codes.PermissionDenied
	case ErrServerError.Code:
		return codes.Internal
	case ErrTemporarilyUnavailable.Code:
		if e.RateLimited {
			return codes.ResourceExhausted
		}
		return codes.Unavailable
	default:
		return codes.InvalidArgument
	}
}

// GRPCStatus is the gRPC status of the error (see GRPCCode), whose details
// carry the OAuth error as a google.rpc.ErrorInfo: Domain ErrorDomain,
// Reason the code and Metadata["error_description"] the description, and
// for temporarily_unavailable a google.rpc.RetryInfo of
// RetryAfterSeconds. It makes status.FromError and status.Convert work on
// an Error; ErrorFromStatus is the reverse.
func (e Error) GRPCStatus() *status.Status {
	st := status.New(e.GRPCCode(), e.statusMessage())
	info := &errdetails.ErrorInfo{Reason: e.Code, Domain: ErrorDomain}
	if e.Description != "" {
		info.Metadata = map[string]string{metadataDescription: e.Description}
	}
	details := []protoadapt.MessageV1{info}
	if e.Code == ErrTemporarilyUnavailable.Code {
		details = append(details, &errdetails.RetryInfo{RetryDelay: durationpb.New(time.Duration(e.RetryAfterSeconds()) * time.Second)})
	}
	if withInfo, err := st.WithDetails(details...); err == nil {
		return withInfo
	}
	return st
}

// statusMessage is the gRPC status message: the code and description, as
// in the HTTP error body.
func (e Error) statusMessage() string {
	if e.Description == "" {
		return e.Code
	}
	return e.Code + ": " + e.Description
}

// ErrorFromStatus returns the Error a status carries in its ErrorInfo
// detail (see Error.GRPCStatus), with RetryAfter from its RetryInfo and
// RateLimited for ResourceExhausted; false when st carries none, as for a
// transport failure or a status from something other than spiffe-sts.
func ErrorFromStatus(st *status.Status) (Error, bool) {
	if st == nil {
		return Error{}, false
	}
	var e Error
	var retry time.Duration
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			if e.Code == "" && d.GetDomain() == ErrorDomain && d.GetReason() != "" {
				e = Error{Code: d.GetReason(), Description: d.GetMetadata()[metadataDescription]}
			}
		case *errdetails.RetryInfo:
			retry = max(d.GetRetryDelay().AsDuration(), 0)
		}
	}
	if e.Code == "" {
		return Error{}, false
	}
	if e.Code == ErrTemporarilyUnavailable.Code {
		e.RetryAfter, e.RateLimited = retry, st.Code() == codes.ResourceExhausted
	}
	return e, true
}
