package grpcauth

import (
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/accesstoken/internal/bearer"
)

// invalidToken is the Unauthenticated status for a token Verify rejected
// with err: a fixed message (bearer.Describe) and the Refusal as a
// google.rpc.ErrorInfo detail.
func invalidToken(err error) error {
	return refusalStatus(bearer.Describe(err), accesstoken.RefusalOf(err))
}

// refusalStatus is the Unauthenticated status "invalid token:
// description" carrying refusal.
func refusalStatus(description string, refusal accesstoken.Refusal) error {
	st := status.New(codes.Unauthenticated, "invalid token: "+description)
	if withInfo, err := st.WithDetails(&errdetails.ErrorInfo{
		Domain: accesstoken.ErrorInfoDomain,
		Reason: refusal.ErrorInfoReason(),
	}); err == nil {
		st = withInfo
	}
	return st.Err()
}

// RefusalOf returns the accesstoken.Refusal an error of a call refused by
// these interceptors carries (a google.rpc.ErrorInfo detail of domain
// accesstoken.ErrorInfoDomain), so that a client can tell a token bound
// to another certificate (RefusalBindingMismatch: re-bind and retry) from
// a bad one. It returns "" for any other error; the status message is
// never read.
func RefusalOf(err error) accesstoken.Refusal {
	if err == nil {
		return ""
	}
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.Unauthenticated {
		return ""
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			if r := accesstoken.RefusalFromErrorInfo(info.GetDomain(), info.GetReason()); r != "" {
				return r
			}
		}
	}
	return ""
}
