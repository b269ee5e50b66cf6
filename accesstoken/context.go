package accesstoken

import "context"

type claimsContextKey struct{}

// NewContext returns a copy of ctx carrying claims. The grpcauth and
// httpauth middleware store the claims of the verified token of a request
// with it.
func NewContext(ctx context.Context, claims *Claims) context.Context {
	return context.WithValue(ctx, claimsContextKey{}, claims)
}

// FromContext returns the claims stored in ctx by NewContext. It returns
// false when there are none.
func FromContext(ctx context.Context) (*Claims, bool) {
	claims, ok := ctx.Value(claimsContextKey{}).(*Claims)
	return claims, ok && claims != nil
}
