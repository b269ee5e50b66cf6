// Package integration holds the end-to-end tests of spiffe-sts. They run
// the real spire-server and spire-agent (built once from the Go module
// proxy at the pinned version and cached, see harness.SPIREBinaries) and the
// real spiffe-sts and stsctl binaries built from this repository, each test
// with its own temporary directories and loopback ports.
//
// The tests are behind the "integration" build tag:
//
//	go test -tags integration ./integration/...
package integration
