package httpauth

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/accesstoken/internal/bearer"
	"github.com/spiffe-sts/spiffe-sts/spiffeid/forwarded"
)

// Option configures Middleware. Only this package creates options.
type Option interface {
	apply(*options)
}

type options struct {
	scopes  []string
	proxies *forwarded.Policy
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

// WithScopes requires a token granting every one of scopes; requests whose
// token lacks one get 403 with an RFC 6750 §3.1 insufficient_scope
// challenge naming them. It panics if a scope is not a valid RFC 6749 §3.3
// scope-token.
func WithScopes(scopes ...string) Option {
	for _, s := range scopes {
		if !bearer.ValidScope(s) {
			panic(fmt.Sprintf("httpauth: invalid scope %q", s))
		}
	}
	scopes = append([]string(nil), scopes...)
	return optionFunc(func(o *options) { o.scopes = append(o.scopes, scopes...) })
}

// WithTrustedProxies makes the middleware check a token's binding against
// the client certificate a trusted proxy forwards (package
// spiffeid/forwarded), for servers behind a proxy or sidecar that
// terminates mTLS. policy says which hops are proxies (by the SPIFFE ID of
// their own mTLS connection, or a Unix socket listener), the header format
// and the bundles the forwarded certificate is verified against.
//
// With it, a request from a trusted proxy is checked against the
// forwarded certificate only: one whose proxy forwarded none is refused,
// never served as the proxy. A request from any other hop is checked
// against that hop's certificate as without the option, unless it carries
// a forwarding header, which is refused. Refusals are 401 invalid_token
// with a fixed description (forwarded.Describe). It panics if policy is
// nil.
func WithTrustedProxies(policy *forwarded.Policy) Option {
	if policy == nil {
		panic("httpauth: nil trusted-proxy policy")
	}
	return optionFunc(func(o *options) { o.proxies = policy })
}

// Middleware returns middleware that passes a request to the next handler
// only if it carries a valid access token bound to the client certificate
// of its TLS connection, with the claims stored in the request's context
// (read them with accesstoken.FromContext). Other requests get an RFC 6750
// §3 response:
//
//   - no bearer token: 401, WWW-Authenticate: Bearer
//   - an invalid token, or no client certificate: 401, Bearer
//     error="invalid_token" with a fixed error_description and
//     refusal="bad_token"
//   - a valid token bound to another certificate (RFC 8705 §3): 401,
//     Bearer error="invalid_token", error_description="the token is not
//     bound to the client certificate", refusal="binding_mismatch"
//   - a valid token lacking a scope: 403, Bearer error="insufficient_scope", scope="..."
func Middleware(v *accesstoken.Verifier, opts ...Option) func(http.Handler) http.Handler {
	o := new(options)
	for _, opt := range opts {
		opt.apply(o)
	}
	scopeChallenge := `Bearer error="insufficient_scope", error_description="the token lacks a required scope", scope="` +
		strings.Join(o.scopes, " ") + `"`
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			raw, err := bearer.Token(r.Header.Values("Authorization"))
			switch {
			case errors.Is(err, bearer.ErrMissing):
				// RFC 6750 §3.1: no error code when the request had no
				// authentication information.
				fail(w, http.StatusUnauthorized, "Bearer")
				return
			case err != nil:
				fail(w, http.StatusUnauthorized, bearer.InvalidToken(err))
				return
			}
			var leaf *x509.Certificate
			switch {
			case o.proxies != nil:
				res, err := o.proxies.Client(forwarded.HopFromRequest(r), r.Header)
				if err != nil {
					fail(w, http.StatusUnauthorized, bearer.InvalidTokenChallenge(forwarded.Describe(err), accesstoken.RefusalBadToken))
					return
				}
				leaf = res.Client.Leaf
			case r.TLS == nil || len(r.TLS.PeerCertificates) == 0:
				fail(w, http.StatusUnauthorized, bearer.InvalidToken(accesstoken.ErrNoCertificate))
				return
			default:
				leaf = r.TLS.PeerCertificates[0]
			}
			claims, err := v.Verify(r.Context(), raw, leaf)
			if err != nil {
				fail(w, http.StatusUnauthorized, bearer.InvalidToken(err))
				return
			}
			if len(bearer.MissingScopes(claims, o.scopes)) > 0 {
				fail(w, http.StatusForbidden, scopeChallenge)
				return
			}
			next.ServeHTTP(w, r.WithContext(accesstoken.NewContext(r.Context(), claims)))
		})
	}
}

func fail(w http.ResponseWriter, code int, challenge string) {
	w.Header().Set("WWW-Authenticate", challenge)
	w.Header().Set("Cache-Control", "no-store")
	http.Error(w, http.StatusText(code), code)
}
