// Package testrun runs a command's main loop in the background of a test
// and collects what it writes.
package testrun

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// Buffer is a bytes.Buffer safe for a writer and a reader.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Start calls fn in the background until the test ends and returns the
// function that stops it: it cancels fn's context and returns fn's error,
// or an error saying that name did not return when fn has not returned
// within timeout. stop may be called more than once.
func Start(t testing.TB, name string, timeout time.Duration, fn func(context.Context) error) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(timeout):
				err = errors.New(name + " did not return")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}
