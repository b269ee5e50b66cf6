// Package accesshook lets code of this module, and only it, verify an
// access token without its certificate binding: the server reads its own
// tokens, presented for exchange, that way and applies its own binding
// rules (RFC 8693 re-binding and delegation). Package accesstoken, which
// resource servers import, offers no such path; it registers its
// implementation here when it is initialized:
//
//	claims, err := accesshook.VerifyWithoutBinding[*accesstoken.Claims](ctx, verifier, raw)
//
// The checks are those of accesstoken.Verifier.Verify except the binding
// and the audience; the errors are accesstoken's (an expired token is an
// *accesstoken.ExpiredError, one not yet valid wraps
// accesstoken.ErrNotYetValid). The cache of Verify is neither read nor
// filled.
package accesshook
