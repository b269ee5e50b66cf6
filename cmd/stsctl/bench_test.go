package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

func TestParseBenchFlags(t *testing.T) {
	baseline := []string{"-sts", "https://127.0.0.1:8443", "-audience", "spiffe://example.org/api"}
	for _, tc := range []struct {
		name     string
		args     []string
		check    func(*testing.T, benchFlags)
		wantErr  string
		wantCode int
	}{
		{name: "baseline", check: func(t *testing.T, f benchFlags) {
			if f.grant != grantClientCredentials || f.transport != transportHTTP || f.connections != 8 || f.duration != 10*time.Second || f.rate != 0 || f.series != "http/client_credentials" {
				t.Errorf("defaults: %+v", f)
			}
		}},
		{name: "distinct pool bounds the requests", args: []string{"-grant", "jwt-svid-distinct", "-pool", "50", "-transport", "grpc"}, check: func(t *testing.T, f benchFlags) {
			if f.requests != 50 || f.series != "grpc/exchange_distinct" {
				t.Errorf("requests %d, series %s", f.requests, f.series)
			}
		}},
		{name: "open loop", args: []string{"-rate", "500", "-grant", "jwt-svid", "-series", "x"}, check: func(t *testing.T, f benchFlags) {
			if f.rate != 500 || f.series != "x" {
				t.Errorf("rate %v, series %s", f.rate, f.series)
			}
		}},
		{name: "no audience", args: []string{"-audience="}, wantErr: "invalid value"},
		{name: "bad grant", args: []string{"-grant", "password"}, wantErr: "-grant must be client-credentials, jwt-svid or jwt-svid-distinct"},
		{name: "bad transport", args: []string{"-transport", "quic"}, wantErr: "-transport must be http or grpc"},
		{name: "http2 with grpc", args: []string{"-transport", "grpc", "-http2"}, wantErr: "-http2 applies to -transport http"},
		{name: "unbounded", args: []string{"-duration", "0"}, wantErr: "-duration or -requests must bound the run"},
		{name: "zero connections", args: []string{"-connections", "0"}, wantErr: "-connections must be positive"},
		{name: "negative rate", args: []string{"-rate", "-1"}, wantErr: "-rate must not be negative"},
		{name: "server cpu without server", args: []string{"-server-cpu", "1"}, wantErr: "-server-cpu and -server-log need -start-server"},
		{name: "start and pid", args: []string{"-start-server", "sts.hcl", "-server-pid", "42"}, wantErr: "-start-server and -server-pid are exclusive"},
		{name: "http sts", args: []string{"-sts", "http://127.0.0.1:8443"}, wantErr: "-sts "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			f, code, ok := parseBenchFlags(append(append([]string(nil), baseline...), tc.args...), &stderr)
			if tc.wantErr == "" {
				if !ok {
					t.Fatalf("refused: %s", stderr.String())
				}
				tc.check(t, f)
				return
			}
			if ok || code != exitUsage || !strings.Contains(stderr.String(), tc.wantErr) {
				t.Errorf("ok %v, code %d, stderr %q; want exit 2 with %q", ok, code, stderr.String(), tc.wantErr)
			}
		})
	}
}

// The loopback guard runs before anything is fetched or sent.
func TestBenchRefusesRemoteTarget(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"bench", "-sts", "https://192.0.2.10:8443", "-audience", "a", "-socket", "unix:///nonexistent"}, nil, &stdout, &stderr)
	if code != exitUsage || !strings.Contains(stderr.String(), "not a loopback address") || !strings.Contains(stderr.String(), "-allow-remote") {
		t.Errorf("code %d, stderr %q", code, stderr.String())
	}
	// With -allow-remote the guard lets it through to the Workload API
	// (which fails at once: the context is already canceled).
	stderr.Reset()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	code = run(ctx, []string{"bench", "-sts", "https://192.0.2.10:8443", "-audience", "a", "-socket", "unix:///nonexistent", "-allow-remote"}, nil, &stdout, &stderr)
	if code != exitEnv || strings.Contains(stderr.String(), "loopback") {
		t.Errorf("code %d, stderr %q", code, stderr.String())
	}
}
