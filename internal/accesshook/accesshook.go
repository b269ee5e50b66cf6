package accesshook

import "context"

// verifyWithoutBinding is the func(context.Context, V, string) (C, error)
// that Register was given.
var verifyWithoutBinding any

// Register records f, the verification without binding of package
// accesstoken. Only accesstoken calls it, from its init function.
func Register[V, C any](f func(ctx context.Context, v V, raw string) (C, error)) {
	verifyWithoutBinding = f
}

// VerifyWithoutBinding verifies raw with v, an *accesstoken.Verifier, and
// returns its claims C, an *accesstoken.Claims, without checking the
// certificate binding or the audience. It panics when V and C are not the
// types accesstoken registered.
func VerifyWithoutBinding[C, V any](ctx context.Context, v V, raw string) (C, error) {
	f, ok := verifyWithoutBinding.(func(context.Context, V, string) (C, error))
	if !ok {
		panic("accesshook: no verification registered for these types")
	}
	return f(ctx, v, raw)
}
