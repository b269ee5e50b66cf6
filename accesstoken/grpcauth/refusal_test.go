package grpcauth_test

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/accesstoken/grpcauth"
)

// expectedRefusal is the Refusal a refusal with status message msg must
// carry: every "invalid token" refusal has one, nothing else does.
func expectedRefusal(msg string) accesstoken.Refusal {
	switch {
	case msg == "invalid token: the token is not bound to the client certificate":
		return accesstoken.RefusalBindingMismatch
	case strings.HasPrefix(msg, "invalid token: "):
		return accesstoken.RefusalBadToken
	}
	return ""
}

// checkRefusal fails t unless err carries the Refusal its message calls
// for, as an ErrorInfo detail that grpcauth.RefusalOf reads.
func checkRefusal(t *testing.T, err error) {
	t.Helper()
	want := expectedRefusal(status.Convert(err).Message())
	if got := grpcauth.RefusalOf(err); got != want {
		t.Fatalf("RefusalOf(%v) = %q, want %q", err, got, want)
	}
}

func TestRefusalOf(t *testing.T) {
	if got := grpcauth.RefusalOf(nil); got != "" {
		t.Errorf("RefusalOf(nil) = %q", got)
	}
	if got := grpcauth.RefusalOf(errors.New("x")); got != "" {
		t.Errorf("RefusalOf(plain error) = %q", got)
	}
	if got := grpcauth.RefusalOf(status.Error(codes.Unauthenticated, "invalid token: the token is not bound to the client certificate")); got != "" {
		t.Errorf("RefusalOf(a status without the detail) = %q: the message must not be trusted", got)
	}
}
