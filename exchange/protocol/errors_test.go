package protocol_test

import (
	"context"
	"errors"
	"math"
	"net/http"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
)

func TestErrorText(t *testing.T) {
	tests := []struct {
		err    protocol.Error
		expect string
	}{
		{protocol.ErrInvalidRequest, "exchange: invalid_request"},
		{protocol.ErrInvalidTarget.WithDescription("audience %q is not allowed", "x"), `exchange: invalid_target: audience "x" is not allowed`},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.expect {
			t.Errorf("Error() = %q, want %q", got, tt.expect)
		}
	}
	// WithDescription returns a copy: the sentinel stays bare.
	if protocol.ErrInvalidTarget.Description != "" {
		t.Errorf("sentinel mutated: %+v", protocol.ErrInvalidTarget)
	}
}

func TestErrorIs(t *testing.T) {
	described := protocol.ErrInvalidGrant.WithDescription("the JWT-SVID has expired")
	if !errors.Is(described, protocol.ErrInvalidGrant) {
		t.Error("errors.Is(described, ErrInvalidGrant) = false")
	}
	if errors.Is(described, protocol.ErrInvalidRequest) {
		t.Error("errors.Is(invalid_grant, ErrInvalidRequest) = true")
	}
	if errors.Is(errors.New("invalid_grant"), protocol.ErrInvalidGrant) {
		t.Error("a plain error with the code as text matched")
	}
}

func TestErrorHTTPStatus(t *testing.T) {
	for e, want := range map[protocol.Error]int{
		protocol.ErrInvalidRequest:         http.StatusBadRequest,
		protocol.ErrInvalidClient:          http.StatusUnauthorized,
		protocol.ErrInvalidGrant:           http.StatusBadRequest,
		protocol.ErrUnauthorizedClient:     http.StatusBadRequest,
		protocol.ErrUnsupportedGrantType:   http.StatusBadRequest,
		protocol.ErrInvalidScope:           http.StatusBadRequest,
		protocol.ErrInvalidTarget:          http.StatusBadRequest,
		protocol.ErrServerError:            http.StatusInternalServerError,
		protocol.ErrTemporarilyUnavailable: http.StatusServiceUnavailable,
		protocol.RateLimited(time.Second):  http.StatusTooManyRequests,
		{Code: "access_denied"}:            http.StatusBadRequest,
	} {
		if got := e.HTTPStatus(); got != want {
			t.Errorf("%s: HTTPStatus = %d, want %d", e.Code, got, want)
		}
	}
}

// TestErrorGRPCStatus checks the mapping of every OAuth error code to a
// gRPC status and back.
func TestErrorGRPCStatus(t *testing.T) {
	tests := []struct {
		err      protocol.Error
		grpcCode codes.Code
		// back is the Error read back when it differs from err: a
		// temporarily_unavailable refusal always says when to retry.
		back protocol.Error
	}{
		{protocol.ErrInvalidRequest, codes.InvalidArgument, protocol.Error{}},
		{protocol.ErrInvalidScope, codes.InvalidArgument, protocol.Error{}},
		{protocol.ErrInvalidTarget, codes.InvalidArgument, protocol.Error{}},
		{protocol.ErrUnsupportedGrantType, codes.InvalidArgument, protocol.Error{}},
		{protocol.ErrInvalidClient, codes.Unauthenticated, protocol.Error{}},
		{protocol.ErrInvalidGrant, codes.PermissionDenied, protocol.Error{}},
		{protocol.ErrUnauthorizedClient, codes.PermissionDenied, protocol.Error{}},
		{protocol.ErrServerError, codes.Internal, protocol.Error{}},
		{protocol.ErrTemporarilyUnavailable, codes.Unavailable, protocol.ErrTemporarilyUnavailable.WithRetryAfter(protocol.RetryAfter * time.Second)},
		{protocol.ErrTemporarilyUnavailable.WithRetryAfter(time.Second), codes.Unavailable, protocol.Error{}},
		// Rounded up to whole seconds, as Retry-After is.
		{protocol.RateLimited(1500 * time.Millisecond), codes.ResourceExhausted, protocol.RateLimited(2 * time.Second)},
		{protocol.RateLimited(math.MaxInt64), codes.ResourceExhausted, protocol.RateLimited(protocol.MaxRetryAfter)},
		{protocol.Error{Code: "access_denied"}, codes.InvalidArgument, protocol.Error{}},
	}
	for _, tt := range tests {
		for _, desc := range []string{"", "a description"} {
			t.Run(tt.err.Code+"/"+desc, func(t *testing.T) {
				e, want := tt.err, tt.back
				if want.Code == "" {
					want = e
				}
				if desc != "" {
					e, want = e.WithDescription("%s", desc), want.WithDescription("%s", desc)
				}
				// status.FromError finds the status through wrapping.
				st, ok := status.FromError(errors.Join(errors.New("context"), e))
				if !ok || st.Code() != tt.grpcCode {
					t.Fatalf("status.FromError = %v, %v; want code %v", st, ok, tt.grpcCode)
				}
				// Through the wire form and back.
				back, ok := protocol.ErrorFromStatus(status.FromProto(st.Proto()))
				if !ok || back != want {
					t.Errorf("ErrorFromStatus = %+v, %v; want %+v", back, ok, want)
				}
				if !errors.Is(back, tt.err) {
					t.Errorf("errors.Is(%v, %v) = false", back, tt.err)
				}
			})
		}
	}
}

func TestErrorFromStatusWithoutErrorInfo(t *testing.T) {
	foreign, err := status.New(codes.PermissionDenied, "denied").WithDetails(&errdetails.ErrorInfo{Reason: "invalid_grant", Domain: "example.org"})
	if err != nil {
		t.Fatal(err)
	}
	for name, st := range map[string]*status.Status{
		"nil":            nil,
		"no details":     status.New(codes.Unavailable, "connection refused"),
		"foreign domain": foreign,
		"context":        status.FromContextError(context.Canceled),
	} {
		if e, ok := protocol.ErrorFromStatus(st); ok {
			t.Errorf("%s: ErrorFromStatus = %+v, true; want false", name, e)
		}
	}
}

func TestRetryAfterSeconds(t *testing.T) {
	for _, tt := range []struct {
		err    protocol.Error
		expect string
	}{
		{protocol.ErrTemporarilyUnavailable, "5"},
		{protocol.RateLimited(time.Nanosecond), "1"},
		{protocol.RateLimited(time.Second), "1"},
		{protocol.RateLimited(time.Second + time.Nanosecond), "2"},
		{protocol.ErrTemporarilyUnavailable.WithRetryAfter(90 * time.Second), "90"},
		// Capped at MaxRetryAfter, saturating rather than overflowing.
		{protocol.RateLimited(protocol.MaxRetryAfter - time.Nanosecond), "3600"},
		{protocol.RateLimited(protocol.MaxRetryAfter), "3600"},
		{protocol.RateLimited(2 * time.Hour), "3600"},
		{protocol.RateLimited(math.MaxInt64 - time.Second + 2), "3600"},
		{protocol.RateLimited(math.MaxInt64), "3600"},
	} {
		if got := tt.err.RetryAfterHeader(); got != tt.expect {
			t.Errorf("%+v: RetryAfterHeader() = %q, want %q", tt.err, got, tt.expect)
		}
	}
}
