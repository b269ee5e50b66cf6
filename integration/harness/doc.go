// Package harness runs a real SPIRE deployment (spire-server and spire-agent)
// on the loopback interface for spiffe-sts integration tests and demos.
//
// The SPIRE binaries for [SPIREVersion] are built once from the separate Go
// module in integration/spire and cached per version (see [SPIREBinaries]).
// [Start] (or [StartT] in tests) then launches a server and a join-token
// attested agent in a short temporary directory, and [SPIRE.Register] adds
// registration entries, typically with unix:path selectors so that each
// workload binary at its own path gets its own SPIFFE ID (see
// [CopyExecutable] and [BuildBinary]).
//
// Everything listens on 127.0.0.1 or on unix sockets only, and every wait is
// bounded by a timeout. Child processes are tied to the calling process
// (they receive SIGKILL if it dies, on Linux) and are stopped by
// [SPIRE.Stop] or [Process.Stop].
package harness
