package cmdutil

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/hashicorp/go-hclog"
)

// ServeHTTP serves h over plain HTTP on ln, with the timeouts and header
// limit of a local endpoint, until the returned stop function shuts it down,
// waiting up to shutdownTimeout for requests in flight. stopped is called
// with the error when serving stops for another reason than stop.
func ServeHTTP(ln net.Listener, h http.Handler, log hclog.Logger, shutdownTimeout time.Duration, stopped func(error)) (stop func()) {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       5 * time.Second,
		WriteTimeout:      5 * time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    8 << 10,
		ErrorLog:          log.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
	}
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			stopped(err)
		}
	}()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}
}
