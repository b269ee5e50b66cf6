package exchangeclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
)

// TestTransient checks which failures send retries: only those of an STS
// that is briefly away, never a refusal or a spent deadline.
func TestTransient(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"503 with temporarily_unavailable", unavailableError{protocol.ErrTemporarilyUnavailable}, true},
		{"503 without an OAuth error", unavailableError{errors.New("answered 503")}, true},
		{"temporarily_unavailable", fmt.Errorf("wrapped: %w", protocol.ErrTemporarilyUnavailable), true},
		{"gRPC Unavailable", fmt.Errorf("exchangeclient: token request: %w", status.Error(codes.Unavailable, "connection refused")), true},
		{"dial refused", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, true},
		{"reset", fmt.Errorf("read: %w", syscall.ECONNRESET), true},
		{"EOF", fmt.Errorf("exchangeclient: token request: %w", io.EOF), true},
		{"invalid_grant", protocol.ErrInvalidGrant, false},
		{"server_error", protocol.ErrServerError, false},
		{"gRPC PermissionDenied", status.Error(codes.PermissionDenied, "no"), false},
		{"deadline", fmt.Errorf("x: %w: %w", io.EOF, context.DeadlineExceeded), false},
		{"canceled", context.Canceled, false},
		{"malformed response", errors.New("exchangeclient: malformed token response"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := transient(tt.err); got != tt.want {
				t.Errorf("transient(%v) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

// TestRetryBackoff checks the delays: within the upper half of 50 ms
// doubling, capped at one second.
func TestRetryBackoff(t *testing.T) {
	var b retryBackoff
	ceiling := firstRetryDelay
	for i := range 10 {
		d := b.next()
		if d < ceiling/2 || d > ceiling {
			t.Fatalf("attempt %d: delay %v, want within [%v, %v]", i, d, ceiling/2, ceiling)
		}
		ceiling = min(2*ceiling, maxSendDelay)
	}
	if ceiling != time.Second {
		t.Fatalf("ceiling %v after 10 attempts, want 1s", ceiling)
	}
}
