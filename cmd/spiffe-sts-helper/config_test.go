package main

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/spiffe-sts/spiffe-sts/helper"
)

// baseline is a valid configuration; each case changes one line.
const baseline = `agent_address = "unix:///run/spire/agent.sock"
issuer_url    = "https://sts.example.org:8443"
sts_spiffe_id = "spiffe://example.org/sts"
output_dir    = "/run/spiffe-sts"

token "orders.token" {
  audiences = ["spiffe://example.org/orders"]
  scopes    = ["orders.read"]
}
`

func baselineConfig() *config {
	return &config{
		AgentAddress: "unix:///run/spire/agent.sock",
		IssuerURL:    "https://sts.example.org:8443",
		STSID:        spiffeid.RequireFromString("spiffe://example.org/sts"),
		OutputDir:    "/run/spiffe-sts",
		Files:        helper.FileNames{Cert: "svid.pem", Key: "svid_key.pem", Bundle: "svid_bundle.pem"},
		FileMode:     0o600,
		DirMode:      0o700,
		Daemon:       true,
		Tokens: []helper.TokenSpec{{
			Name: "orders.token", Audience: []string{"spiffe://example.org/orders"},
			Scope: []string{"orders.read"}, Grant: helper.GrantClientCredentials,
		}},
		CmdTimeout: 30 * time.Second,
		Timeout:    10 * time.Second,
		LogLevel:   hclog.Info,
	}
}

// replaceLine replaces the line starting with prefix (its first match).
func replaceLine(src, prefix, line string) string {
	lines := strings.Split(src, "\n")
	for i, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), prefix) {
			lines[i] = line
			return strings.Join(lines, "\n")
		}
	}
	panic("no line " + prefix)
}

func TestParseConfig(t *testing.T) {
	for _, tc := range []struct {
		name             string
		overrideSrc      func(string) string
		envSocket        string
		overrideExpected func(*config)
		expectErr        string
	}{
		{name: "baseline"},
		{
			name:             "agent address from the environment",
			overrideSrc:      func(s string) string { return replaceLine(s, "agent_address", "") },
			envSocket:        "unix:///tmp/agent.sock",
			overrideExpected: func(c *config) { c.AgentAddress = "unix:///tmp/agent.sock" },
		},
		{
			name:        "no agent address",
			overrideSrc: func(s string) string { return replaceLine(s, "agent_address", "") },
			expectErr:   "helper.hcl:1: agent_address: is required when SPIFFE_ENDPOINT_SOCKET is not set",
		},
		{
			name:        "unknown key",
			overrideSrc: func(s string) string { return replaceLine(s, "output_dir", `cert_dir = "/x"`) },
			expectErr:   `helper.hcl:4: Unsupported argument: An argument named "cert_dir" is not expected here.`,
		},
		{
			name:        "unknown key in a token",
			overrideSrc: func(s string) string { return replaceLine(s, "scopes", `  scope = ["x"]`) },
			expectErr:   `helper.hcl:8: Unsupported argument: An argument named "scope" is not expected here. Did you mean "scopes"?`,
		},
		{
			name:        "issuer URL with a path",
			overrideSrc: func(s string) string { return replaceLine(s, "issuer_url", `issuer_url = "https://sts.example.org/x"`) },
			expectErr:   "helper.hcl:2: issuer_url: must not have a path",
		},
		{
			name:        "no STS SPIFFE ID",
			overrideSrc: func(s string) string { return replaceLine(s, "sts_spiffe_id", "") },
			expectErr:   "helper.hcl:1: sts_spiffe_id: is required",
		},
		{
			name:        "bad STS SPIFFE ID",
			overrideSrc: func(s string) string { return replaceLine(s, "sts_spiffe_id", `sts_spiffe_id = "https://sts"`) },
			expectErr:   `helper.hcl:3: sts_spiffe_id: invalid SPIFFE ID "https://sts": scheme is missing or invalid`,
		},
		{
			name:        "no output dir",
			overrideSrc: func(s string) string { return replaceLine(s, "output_dir", "") },
			expectErr:   "helper.hcl:1: output_dir: is required",
		},
		{
			name: "file names",
			overrideSrc: func(s string) string {
				return replaceLine(s, "output_dir", `output_dir = "/run/spiffe-sts"`+"\ncert_file = \"tls.crt\"")
			},
			overrideExpected: func(c *config) { c.Files.Cert = "tls.crt" },
		},
		{
			name: "file name with a slash",
			overrideSrc: func(s string) string {
				return replaceLine(s, "output_dir", `output_dir = "/o"`+"\nkey_file = \"../key.pem\"")
			},
			expectErr: `helper.hcl:5: key_file: file name "../key.pem" starts with a dot`,
		},
		{
			name:        "token file name clashes",
			overrideSrc: func(s string) string { return replaceLine(s, "token", `token "svid.pem" {`) },
			expectErr:   `helper.hcl:6: token "svid.pem": file name "svid.pem" is also used by cert_file`,
		},
		{
			name: "modes",
			overrideSrc: func(s string) string {
				return replaceLine(s, "output_dir", `output_dir = "/run/spiffe-sts"`+"\nfile_mode = \"0640\"\ndir_mode = \"0750\"")
			},
			overrideExpected: func(c *config) { c.FileMode, c.DirMode = 0o640, 0o750 },
		},
		{
			name: "world-readable files",
			overrideSrc: func(s string) string {
				return replaceLine(s, "output_dir", `output_dir = "/o"`+"\nfile_mode = \"0644\"")
			},
			expectErr: `helper.hcl:5: file_mode: mode "0644" grants 0004, which is not allowed`,
		},
		{
			name:        "not octal",
			overrideSrc: func(s string) string { return replaceLine(s, "output_dir", `output_dir = "/o"`+"\ndir_mode = \"rwx\"") },
			expectErr:   `helper.hcl:5: dir_mode: invalid mode "rwx": want octal permission bits such as "0600"`,
		},
		{
			name: "one-shot",
			overrideSrc: func(s string) string {
				return replaceLine(s, "output_dir", `output_dir = "/run/spiffe-sts"`+"\ndaemon_mode = false")
			},
			overrideExpected: func(c *config) { c.Daemon = false },
		},
		{
			name:             "no token: SVID only",
			overrideSrc:      func(s string) string { return s[:strings.Index(s, "token")] },
			overrideExpected: func(c *config) { c.Tokens = nil },
		},
		{
			name: "SVID only needs no STS",
			overrideSrc: func(s string) string {
				s = replaceLine(replaceLine(s[:strings.Index(s, "token")], "issuer_url", ""), "sts_spiffe_id", "")
				return s
			},
			overrideExpected: func(c *config) { c.Tokens, c.IssuerURL, c.STSID = nil, "", spiffeid.ID{} },
		},
		{
			name: "SVID only, bad issuer URL still refused",
			overrideSrc: func(s string) string {
				return replaceLine(s[:strings.Index(s, "token")], "issuer_url", `issuer_url = "http://sts"`)
			},
			expectErr: `helper.hcl:2: issuer_url: must be an https URL`,
		},
		{
			name:        "tokens need an issuer URL",
			overrideSrc: func(s string) string { return replaceLine(s, "issuer_url", "") },
			expectErr:   "helper.hcl:1: issuer_url: is required",
		},
		{
			name: "combined file",
			overrideSrc: func(s string) string {
				return replaceLine(s, "output_dir", `output_dir = "/run/spiffe-sts"`+"\ncombined_file = \"proxy.pem\"")
			},
			overrideExpected: func(c *config) { c.Files.Combined = "proxy.pem" },
		},
		{
			name: "combined file clashes",
			overrideSrc: func(s string) string {
				return replaceLine(s, "output_dir", `output_dir = "/o"`+"\ncombined_file = \"svid.pem\"")
			},
			expectErr: `helper.hcl:5: combined_file: file name "svid.pem" is also used by cert_file`,
		},
		{
			name:        "token without audience",
			overrideSrc: func(s string) string { return replaceLine(s, "audiences", "") },
			expectErr:   `helper.hcl:6: token "orders.token": audiences: at least one audience is required`,
		},
		{
			name:             "jwt_svid grant",
			overrideSrc:      func(s string) string { return replaceLine(s, "scopes", `  grant = "jwt_svid"`) },
			overrideExpected: func(c *config) { c.Tokens[0].Grant, c.Tokens[0].Scope = helper.GrantJWTSVID, nil },
		},
		{
			name:        "unknown grant",
			overrideSrc: func(s string) string { return replaceLine(s, "scopes", `  grant = "password"`) },
			expectErr:   `helper.hcl:8: token "orders.token": grant: must be client_credentials or jwt_svid, got "password"`,
		},
		{
			name: "command",
			overrideSrc: func(s string) string {
				return replaceLine(s, "output_dir", `output_dir = "/run/spiffe-sts"`+"\ncmd = \"/usr/sbin/nginx\"\ncmd_args = [\"-s\", \"reload\"]\ncmd_timeout = \"5s\"")
			},
			overrideExpected: func(c *config) {
				c.Cmd, c.CmdArgs, c.CmdTimeout = "/usr/sbin/nginx", []string{"-s", "reload"}, 5*time.Second
			},
		},
		{
			name:        "cmd_args without cmd",
			overrideSrc: func(s string) string { return replaceLine(s, "output_dir", `output_dir = "/o"`+"\ncmd_args = [\"x\"]") },
			expectErr:   "helper.hcl:5: cmd_args: is set without cmd",
		},
		{
			name: "signal",
			overrideSrc: func(s string) string {
				return replaceLine(s, "output_dir", `output_dir = "/run/spiffe-sts"`+"\npid_file_name = \"/run/app.pid\"\nrenew_signal = \"SIGUSR1\"")
			},
			overrideExpected: func(c *config) { c.PIDFile, c.RenewSignal = "/run/app.pid", syscall.SIGUSR1 },
		},
		{
			name: "signal without pid file",
			overrideSrc: func(s string) string {
				return replaceLine(s, "output_dir", `output_dir = "/o"`+"\nrenew_signal = \"SIGHUP\"")
			},
			expectErr: "helper.hcl:1: pid_file_name: is required with renew_signal",
		},
		{
			name: "unknown signal",
			overrideSrc: func(s string) string {
				return replaceLine(s, "output_dir", `output_dir = "/o"`+"\npid_file_name = \"/p\"\nrenew_signal = \"SIGKILLALL\"")
			},
			expectErr: `helper.hcl:6: renew_signal: unknown signal "SIGKILLALL" (want one of SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2)`,
		},
		{
			name: "listen on a unix socket",
			overrideSrc: func(s string) string {
				return replaceLine(s, "output_dir", `output_dir = "/run/spiffe-sts"`+"\nlisten = \"unix:///run/h.sock\"")
			},
			overrideExpected: func(c *config) { c.ListenNetwork, c.ListenAddress = "unix", "/run/h.sock" },
		},
		{
			name: "listen on loopback",
			overrideSrc: func(s string) string {
				return replaceLine(s, "output_dir", `output_dir = "/run/spiffe-sts"`+"\nlisten = \"127.0.0.1:8700\"")
			},
			overrideExpected: func(c *config) { c.ListenNetwork, c.ListenAddress = "tcp", "127.0.0.1:8700" },
		},
		{
			name: "listen on IPv6 loopback",
			overrideSrc: func(s string) string {
				return replaceLine(s, "output_dir", `output_dir = "/run/spiffe-sts"`+"\nlisten = \"[::1]:8700\"")
			},
			overrideExpected: func(c *config) { c.ListenNetwork, c.ListenAddress = "tcp", "[::1]:8700" },
		},
		{
			name: "listen on all interfaces",
			overrideSrc: func(s string) string {
				return replaceLine(s, "output_dir", `output_dir = "/o"`+"\nlisten = \"0.0.0.0:8700\"")
			},
			expectErr: `helper.hcl:5: listen: address "0.0.0.0:8700" is not loopback: the token endpoint listens only on a Unix socket or a loopback address`,
		},
		{
			name:        "listen without a host",
			overrideSrc: func(s string) string { return replaceLine(s, "output_dir", `output_dir = "/o"`+"\nlisten = \":8700\"") },
			expectErr:   `helper.hcl:5: listen: address ":8700" is not loopback: the token endpoint listens only on a Unix socket or a loopback address`,
		},
		{
			name: "listen on a relative socket",
			overrideSrc: func(s string) string {
				return replaceLine(s, "output_dir", `output_dir = "/o"`+"\nlisten = \"unix://h.sock\"")
			},
			expectErr: `helper.hcl:5: listen: invalid address "unix://h.sock": want unix:///absolute/path`,
		},
		{
			name:        "bad duration",
			overrideSrc: func(s string) string { return replaceLine(s, "output_dir", `output_dir = "/o"`+"\ntimeout = \"5x\"") },
			expectErr:   `helper.hcl:5: timeout: invalid duration "5x"`,
		},
		{
			name: "bad log level",
			overrideSrc: func(s string) string {
				return replaceLine(s, "output_dir", `output_dir = "/o"`+"\nlog_level = \"loud\"")
			},
			expectErr: `helper.hcl:5: log_level: must be trace, debug, info, warn or error, got "loud"`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := baseline
			if tc.overrideSrc != nil {
				src = tc.overrideSrc(src)
			}
			got, err := parseConfig("helper.hcl", []byte(src), tc.envSocket)
			if tc.expectErr != "" {
				if err == nil || err.Error() != tc.expectErr {
					t.Fatalf("err = %v\nwant %s", err, tc.expectErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := baselineConfig()
			if tc.overrideExpected != nil {
				tc.overrideExpected(want)
			}
			if g, w := dump(got), dump(want); g != w {
				t.Fatalf("got  %s\nwant %s", g, w)
			}
		})
	}
}

func dump(c *config) string { return fmt.Sprintf("%+v", *c) }

func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(baseline))
	f.Add([]byte(`token "a" { audiences = [""] }`))
	f.Add([]byte(`listen = "[::1]:1"`))
	f.Fuzz(func(t *testing.T, src []byte) {
		cfg, err := parseConfig("fuzz.hcl", src, "unix:///tmp/agent.sock")
		if err == nil && (cfg.IssuerURL == "" || len(cfg.Tokens) == 0 || cfg.OutputDir == "") {
			t.Fatalf("accepted an incomplete configuration: %+v", cfg)
		}
	})
}

// TestSidecarExampleConfig parses the helper.hcl of the Kubernetes example,
// so that the example keeps up with the configuration.
func TestSidecarExampleConfig(t *testing.T) {
	raw, err := os.ReadFile("../../deploy/kubernetes/helper-sidecar.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(raw), "  helper.hcl: |\n")
	if !ok {
		t.Fatal("no helper.hcl in the ConfigMap")
	}
	rest, _, _ = strings.Cut(rest, "\n---\n")
	var src strings.Builder
	for _, line := range strings.Split(rest, "\n") {
		src.WriteString(strings.TrimPrefix(line, "    ") + "\n")
	}
	cfg, err := parseConfig("helper-sidecar.yaml", []byte(src.String()), "")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ListenNetwork != "unix" || len(cfg.Tokens) != 1 || !cfg.Daemon {
		t.Fatalf("%+v", cfg)
	}
}
