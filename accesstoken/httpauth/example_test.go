package httpauth_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/accesstoken/httpauth"
)

func ExampleMiddleware() {
	keys, _ := accesstoken.ParseStaticKeySet([]byte(`{"keys":[]}`)) // in production, a RemoteKeySet
	v := accesstoken.NewVerifier("https://sts.example.org", keys, &accesstoken.Config{
		Audiences: []string{"spiffe://example.org/api"},
	})
	orders := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		claims, _ := accesstoken.FromContext(r.Context())
		fmt.Fprintf(w, "orders of %s\n", claims.Subject)
	})
	handler := httpauth.Middleware(v, httpauth.WithScopes("read"))(orders)

	// A request without a token is challenged (RFC 6750 §3.1).
	w := httptest.NewRecorder()
	handler.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "https://api.example.org/orders", nil))
	fmt.Println(w.Code, w.Header().Get("WWW-Authenticate"))
	// Output: 401 Bearer
}
