package cmdutil

import (
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
)

func TestServeHTTP(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stopped := make(chan error, 1)
	stop := ServeHTTP(ln, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}), hclog.NewNullLogger(), time.Second, func(err error) { stopped <- err })
	resp, err := http.Get("http://" + ln.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "ok" {
		t.Errorf("body = %q, want %q", body, "ok")
	}
	stop()
	if _, err := http.Get("http://" + ln.Addr().String() + "/"); err == nil {
		t.Error("the listener still serves after stop")
	}
	select {
	case err := <-stopped:
		t.Errorf("stopped called after stop: %v", err)
	default:
	}
}
