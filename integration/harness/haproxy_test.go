package harness_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spiffe-sts/spiffe-sts/integration/harness"
)

// readmeHAProxy is the deployment the README's "Behind proxies" snippet
// shows: the configuration the integration tests run, with a deployment's
// names and paths.
var readmeHAProxy = harness.HAProxyOptions{
	Ingress: []harness.HAProxyIngress{{
		Name: "sts_ingress", Listen: "0.0.0.0:8443", Server: "10.0.0.10:8443", ServerName: "sts.example.org",
		Cert: "/run/proxy/current/proxy.pem", CA: "/run/proxy/current/svid_bundle.pem",
	}},
	Egress: []harness.HAProxyEgress{{
		Name: "egress", Listen: "127.0.0.1:15001",
		Cert: "/run/app-svid/current/proxy.pem", CA: "/run/app-svid/current/svid_bundle.pem",
		Routes: []harness.HAProxyRoute{
			{Host: "sts.example.org:8443", Server: "sts.example.org:8443", ServerName: "sts.example.org"},
			{Host: "orders.example.org:9444", Server: "orders.example.org:9444", ServerName: "orders.example.org"},
			{Host: "orders.example.org:9443", Server: "orders.example.org:9443", ServerName: "orders.example.org", HTTP2: true},
		},
	}},
}

// TestREADMEHAProxyConfig keeps the README's HAProxy snippet the one the
// integration tests (TestProxyIngress, TestProxyEgressRotation,
// TestProxyEgressRotationGRPC) run.
func TestREADMEHAProxyConfig(t *testing.T) {
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	want := "```haproxy\n" + harness.HAProxyConfig(readmeHAProxy, "/run/haproxy.pid") + "```\n"
	if !strings.Contains(string(readme), want) {
		t.Fatalf("README.md lacks the HAProxy configuration the tests run; it should contain:\n%s", want)
	}
}
