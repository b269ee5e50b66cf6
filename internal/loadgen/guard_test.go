package loadgen

import (
	"context"
	"errors"
	"testing"
)

func TestResolveTarget(t *testing.T) {
	for _, tc := range []struct {
		name, url, connect string
		allowRemote        bool
		wantNetwork        string
		wantAddr           string
		wantErr            error
	}{
		{name: "baseline ipv4 loopback", url: "https://127.0.0.1:8443", wantNetwork: "tcp", wantAddr: "127.0.0.1:8443"},
		{name: "other 127/8 address", url: "https://127.3.2.1:8443", wantNetwork: "tcp", wantAddr: "127.3.2.1:8443"},
		{name: "ipv6 loopback", url: "https://[::1]:8443", wantNetwork: "tcp", wantAddr: "[::1]:8443"},
		{name: "ipv4-mapped loopback", url: "https://[::ffff:127.0.0.1]:8443", wantNetwork: "tcp", wantAddr: "127.0.0.1:8443"},
		{name: "default port", url: "https://127.0.0.1", wantNetwork: "tcp", wantAddr: "127.0.0.1:443"},
		{name: "remote refused", url: "https://192.0.2.10:8443", wantErr: ErrRemote},
		{name: "unspecified refused", url: "https://0.0.0.0:8443", wantErr: ErrRemote},
		{name: "ipv6 remote refused", url: "https://[2001:db8::1]:8443", wantErr: ErrRemote},
		{name: "remote allowed", url: "https://192.0.2.10:8443", allowRemote: true, wantNetwork: "tcp", wantAddr: "192.0.2.10:8443"},
		{name: "connect overrides the URL host", url: "https://sts.example.org:8443", connect: "127.0.0.1:9443", wantNetwork: "tcp", wantAddr: "127.0.0.1:9443"},
		{name: "connect remote refused", url: "https://127.0.0.1:8443", connect: "192.0.2.10:8443", wantErr: ErrRemote},
		{name: "unix socket", url: "https://sts.example.org", connect: "unix:///run/sts.sock", wantNetwork: "unix", wantAddr: "/run/sts.sock"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ResolveTarget(context.Background(), tc.url, tc.connect, tc.allowRemote)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.Network != tc.wantNetwork || got.Addr != tc.wantAddr || got.URL != tc.url {
				t.Errorf("got %+v, want %s %s", got, tc.wantNetwork, tc.wantAddr)
			}
		})
	}
}

func TestResolveTargetBadInput(t *testing.T) {
	for _, tc := range []struct{ url, connect, wantErr string }{
		{"http://127.0.0.1:8443", "", `loadgen: "http://127.0.0.1:8443" is not an https URL`},
		{"https://127.0.0.1:8443", "unix://", `loadgen: "unix://" names no socket`},
		{"https://127.0.0.1:8443", "127.0.0.1", "loadgen: address \"127.0.0.1\": address 127.0.0.1: missing port in address"},
	} {
		_, err := ResolveTarget(context.Background(), tc.url, tc.connect, false)
		if err == nil || err.Error() != tc.wantErr {
			t.Errorf("ResolveTarget(%q, %q) = %v, want %s", tc.url, tc.connect, err, tc.wantErr)
		}
	}
}
