package exchange

import (
	"bytes"
	"encoding/json"
	"net/http"
	"sync"

	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
)

// writeJSON writes v with the no-store headers every token endpoint response
// carries (RFC 6749 §5.1).
func writeJSON(w http.ResponseWriter, status int, v any) {
	jb := jsonBufferPool.Get().(*jsonBuffer)
	defer jb.release()
	// Encode writes what json.Marshal returns, and a newline, into a
	// pooled buffer: no copy of the body per response.
	body := serverErrorJSON
	if err := jb.encoder.Encode(v); err == nil {
		body = bytes.TrimSuffix(jb.buf.Bytes(), []byte("\n"))
	} else {
		status = http.StatusInternalServerError
	}
	h := w.Header()
	h["Content-Type"] = jsonContentType
	h["Cache-Control"] = noStore
	h["Pragma"] = noCache
	w.WriteHeader(status)
	_, _ = w.Write(body) // a Writer does not keep its argument (io.Writer)
}

var serverErrorJSON = []byte(`{"error":"server_error"}`)

// jsonBuffer is a buffer with a JSON encoder writing to it.
type jsonBuffer struct {
	buf     bytes.Buffer
	encoder *json.Encoder
}

// maxPooledJSONBuffer bounds the buffers kept for reuse; responses are
// a token and a few short members.
const maxPooledJSONBuffer = 16 << 10

var jsonBufferPool = sync.Pool{New: func() any {
	jb := new(jsonBuffer)
	jb.encoder = json.NewEncoder(&jb.buf)
	return jb
}}

// release returns jb to the pool, empty, unless it grew too large.
func (jb *jsonBuffer) release() {
	if jb.buf.Cap() > maxPooledJSONBuffer {
		return
	}
	jb.buf.Reset()
	jsonBufferPool.Put(jb)
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
