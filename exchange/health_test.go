package exchange_test

import (
	"io"
	"net/http"
	"testing"

	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
)

// TestServerHealth checks that the Server serves exchange.HealthHandler,
// the handler cmd/spiffe-sts also serves on its health listener, without
// a client certificate.
func TestServerHealth(t *testing.T) {
	f := newFixture(t, nil)
	for path, expect := range map[string]string{protocol.PathHealthz: "ok\n", protocol.PathReadyz: "ready\n"} {
		resp, err := f.client(nil).Get(f.issuerURL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK || string(body) != expect {
			t.Errorf("GET %s: %d %q, want 200 %q", path, resp.StatusCode, body, expect)
		}
	}
}
