package protocol_test

import (
	"testing"

	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
)

// TestCheckIssuerURL starts from a good issuer URL and changes one thing
// per case.
func TestCheckIssuerURL(t *testing.T) {
	tests := []struct {
		name      string
		raw       string
		expectErr string
	}{
		{name: "host and port", raw: "https://sts.example.org:8443"},
		{name: "host only", raw: "https://sts.example.org"},
		{name: "IPv6 host", raw: "https://[::1]:8443"},
		{name: "empty", raw: "", expectErr: "is required"},
		{name: "unparsable", raw: "https://sts.example.org:8443%zz", expectErr: "is not a valid URL"},
		{name: "http", raw: "http://sts.example.org:8443", expectErr: "must be an https URL"},
		{name: "no scheme", raw: "sts.example.org:8443", expectErr: "must be an https URL"},
		{name: "no host", raw: "https:///token", expectErr: "must be an https URL"},
		{name: "port without host", raw: "https://:8443", expectErr: "must be an https URL"},
		{name: "empty port", raw: "https://sts.example.org:", expectErr: "must be an https URL"},
		{name: "opaque", raw: "https:sts.example.org", expectErr: "must be an https URL"},
		{name: "upper-case scheme", raw: "HTTPS://sts.example.org:8443", expectErr: "must be an https URL"},
		{name: "user info", raw: "https://user@sts.example.org:8443", expectErr: "must not have user info, a query or a fragment"},
		{name: "query", raw: "https://sts.example.org:8443?a=b", expectErr: "must not have user info, a query or a fragment"},
		{name: "empty query", raw: "https://sts.example.org:8443?", expectErr: "must not have user info, a query or a fragment"},
		{name: "fragment", raw: "https://sts.example.org:8443#x", expectErr: "must not have user info, a query or a fragment"},
		{name: "empty fragment", raw: "https://sts.example.org:8443#", expectErr: "must not have user info, a query or a fragment"},
		{name: "trailing slash", raw: "https://sts.example.org:8443/", expectErr: "must not end in a slash"},
		{name: "path", raw: "https://sts.example.org:8443/sts", expectErr: "must not have a path"},
		{name: "path with trailing slash", raw: "https://sts.example.org:8443/sts/", expectErr: "must not have a path"},
		{name: "escaped path", raw: "https://sts.example.org:8443/%2F", expectErr: "must not have a path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := protocol.CheckIssuerURL(tt.raw)
			switch {
			case tt.expectErr == "" && err != nil:
				t.Fatalf("CheckIssuerURL(%q) = %v, want nil", tt.raw, err)
			case tt.expectErr != "" && (err == nil || err.Error() != tt.expectErr):
				t.Fatalf("CheckIssuerURL(%q) = %v, want %s", tt.raw, err, tt.expectErr)
			}
		})
	}
}
