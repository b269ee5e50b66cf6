package exchange

import (
	"encoding/json"
	"fmt"
	"net/http"
)

// Error is an OAuth 2.0 error response (RFC 6749 §5.2, RFC 8693 §2.2.2).
// Use the sentinels and WithDescription; compare with errors.Is, which
// matches on Code.
type Error struct {
	Code        string `json:"error"`
	Description string `json:"error_description,omitempty"`
}

// The error codes of RFC 6749 §5.2 and RFC 8693 §2.2.2.
var (
	ErrInvalidRequest       = Error{Code: "invalid_request"}
	ErrInvalidClient        = Error{Code: "invalid_client"}
	ErrInvalidGrant         = Error{Code: "invalid_grant"}
	ErrUnauthorizedClient   = Error{Code: "unauthorized_client"}
	ErrUnsupportedGrantType = Error{Code: "unsupported_grant_type"}
	ErrInvalidScope         = Error{Code: "invalid_scope"}
	ErrInvalidTarget        = Error{Code: "invalid_target"}
	// ErrServerError reports a failure on the server's side; its description
	// never carries internal detail.
	ErrServerError = Error{Code: "server_error"}
)

// WithDescription returns a copy of e with a human-readable description.
// Descriptions must help the caller and reveal nothing internal.
func (e Error) WithDescription(format string, args ...any) Error {
	e.Description = fmt.Sprintf(format, args...)
	return e
}

func (e Error) Error() string {
	if e.Description == "" {
		return "exchange: " + e.Code
	}
	return "exchange: " + e.Code + ": " + e.Description
}

// Is reports whether target is an Error with the same code.
func (e Error) Is(target error) bool {
	t, ok := target.(Error)
	return ok && t.Code == e.Code
}

// HTTPStatus is the status code of the error response: 401 for
// invalid_client (RFC 6749 §5.2), 500 for server_error, 400 otherwise.
func (e Error) HTTPStatus() int {
	switch e.Code {
	case ErrInvalidClient.Code:
		return http.StatusUnauthorized
	case ErrServerError.Code:
		return http.StatusInternalServerError
	default:
		return http.StatusBadRequest
	}
}

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

// writeError writes e as an RFC 6749 §5.2 error response.
func writeError(w http.ResponseWriter, e Error) {
	writeJSON(w, e.HTTPStatus(), e)
}

var (
	jsonContentType = []string{"application/json"}
	noStore         = []string{"no-store"}
	noCache         = []string{"no-cache"}
)
