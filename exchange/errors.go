package exchange

import (
	"encoding/json"
	"net/http"

	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
)

// writeJSON writes v with the no-store headers every token endpoint response
// carries (RFC 6749 §5.1).
func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status, body = http.StatusInternalServerError, []byte(`{"error":"server_error"}`)
	}
	h := w.Header()
	h["Content-Type"] = jsonContentType
	h["Cache-Control"] = noStore
	h["Pragma"] = noCache
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// writeError writes e as an RFC 6749 §5.2 error response, with
// Retry-After for temporarily_unavailable (RFC 9110 §10.2.3): 503, or 429
// for a caller over its rate limit (RFC 6585 §4).
func writeError(w http.ResponseWriter, e protocol.Error) {
	if e.Code == protocol.ErrTemporarilyUnavailable.Code {
		w.Header()["Retry-After"] = []string{e.RetryAfterHeader()}
	}
	writeJSON(w, e.HTTPStatus(), e)
}

var (
	jsonContentType = []string{"application/json"}
	noStore         = []string{"no-store"}
	noCache         = []string{"no-cache"}
)
