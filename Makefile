# spiffe-sts developer entry points. `make demo` and `make test` are the
# README's quickstart; .ci/run calls `make test`.
GO ?= go
SHELL := /bin/bash

.PHONY: demo test deps lint unit integration bench loadtest soak fuzz fuzz-ci build proto

## demo: run spiffe-sts end to end on a real local SPIRE (builds SPIRE once, cached)
demo:
	$(GO) run ./integration/demo

## test: everything CI runs: lint, unit tests with -race, a brief run of each fuzz target,
## integration tests on real SPIRE, PostgreSQL and the other real servers (their Debian
## packages installed first when absent)
test: deps lint unit fuzz-ci integration

## deps: install the Debian packages whose real servers the tests run, when absent
deps:
	@.ci/install-packages

lint:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags integration ./integration/...
	$(GO) tool staticcheck ./...
	$(GO) tool staticcheck -tags integration ./integration/...

unit:
	$(GO) test -race -count=1 ./...

# The verbose log goes to integration.out; the console gets the results, and
# the log's tail when something failed.
integration:
	@set -o pipefail; $(GO) test -tags integration -count=1 -timeout 30m -v ./integration/... > integration.out 2>&1; rc=$$?; \
	grep -E '^\s*(--- |PASS|FAIL|ok |panic)|rotations=|fault=|server certificates seen' integration.out; \
	if [ $$rc -ne 0 ]; then echo "--- integration.out (tail) ---"; tail -n 400 integration.out; fi; exit $$rc

## bench: the benchmarks quoted in the README (one CPU)
bench:
	$(GO) test -run '^$$' -bench . -benchmem -cpu 1 ./accesstoken ./issuer ./exchange ./spiffeid ./internal/ratelimit

## loadtest: stsctl bench against spiffe-sts on a real local SPIRE, server
## pinned to core 1 and loader to core 0; one line per series with the
## ES256 floor of the same run beside it. A measurement: not part of test.
loadtest:
	$(GO) run ./integration/loadtest

## soak: spiffe-sts on a real local SPIRE under the client library at half
## the measured peak for SOAK_DURATION while the client's X509-SVID rotates;
## prints soak_s=... rps=... rotations=... errors=... and the server's RSS and
## goroutines at the start and end, and fails on any error or growth.
## make test runs a one-minute form (TestSoakShort).
SOAK_DURATION ?= 600s
soak:
	$(GO) run ./integration/soak -duration $(SOAK_DURATION)

## fuzz: a run of each fuzz target, FUZZTIME each (default 30s). The
## figures of the README's closing note come from `make fuzz FUZZTIME=10m`.
## Each target is a package and a function: every parser of untrusted input.
FUZZTIME ?= 30s
FUZZPARALLEL ?=
FUZZ_TARGETS := \
	./exchange:FuzzParseForm \
	./exchange:FuzzParseJSON \
	./exchange:FuzzParseIntrospectionForm \
	./accesstoken:FuzzClaimsJSON \
	./accesstoken:FuzzVerify \
	./accesstoken:FuzzParseChallenge \
	./accesstoken/extauthz:FuzzVerifyPeer \
	./spiffeid:FuzzParsePattern \
	./spiffeid/forwarded:FuzzParseXFCC \
	./spiffeid/forwarded:FuzzXFCCCertificates \
	./spiffeid/forwarded:FuzzParseClientCert \
	./cmd/spiffe-sts:FuzzParseConfig \
	./cmd/spiffe-sts-helper:FuzzParseConfig \
	./audit:FuzzRecordJSON

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; name=$${t##*:}; echo "fuzz $$pkg $$name ($(FUZZTIME))"; \
		$(GO) test -run '^$$' -fuzz "^$$name\$$" -fuzztime $(FUZZTIME) $(if $(FUZZPARALLEL),-parallel $(FUZZPARALLEL)) "$$pkg"; \
	done

## fuzz-ci: the brief run of every fuzz target that make test does: a count,
## not a duration, because a -fuzztime duration can fail at its end with
## "context deadline exceeded" and no crasher (golang/go#75804, fixed in Go 1.27)
fuzz-ci:
	@$(MAKE) --no-print-directory fuzz FUZZTIME=10000x FUZZPARALLEL=1

build:
	$(GO) build -o bin/ ./cmd/...

# proto: regenerate exchange/exchangepb from exchange.proto. The generated
# files are committed, so building and testing need none of these tools:
#   protoc                 libprotoc 3.21.12 (apt-get install protobuf-compiler)
#   protoc-gen-go          google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12 (go.mod's protobuf)
#   protoc-gen-go-grpc     google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.2 (needs grpc >= v1.64; go.mod has v1.85.0)
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
PROTO_BIN := $(CURDIR)/bin/proto
proto:
	GOBIN=$(PROTO_BIN) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(PROTO_BIN) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	cd exchange/exchangepb && PATH="$(PROTO_BIN):$$PATH" protoc --proto_path=. \
		--go_out=. --go_opt=paths=source_relative \
		--go-grpc_out=. --go-grpc_opt=paths=source_relative \
		exchange.proto
