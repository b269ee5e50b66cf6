package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	stsid "github.com/spiffe-sts/spiffe-sts/spiffeid"
)

// ringConfig is a valid configuration using every key ring key. Test
// cases change one thing; the line numbers in expected errors refer to it.
const ringConfig = `server {
  trust_domain        = "example.org"
  issuer_url          = "https://sts.example.org:8443"
  bind_address        = "127.0.0.1:8443"
  data_dir            = "/var/lib/spiffe-sts"
  workload_api_socket = "unix:///run/spire/agent.sock"
  jwks_max_age        = "2m"
}

issuer {
  signing_algorithm  = "ES256"
  default_ttl        = "5m"
  rotation_period    = "12h"
  publication_window = "6m"
}

datastore "postgres" {
  connection_string_file  = "/etc/spiffe-sts/datastore/connection-string"
  key_encryption_key_file = "/etc/spiffe-sts/kek/kek"
  refresh_interval        = "1s"
}

policy "spiffe://example.org/ns/*/sa/web" {
  audiences = ["spiffe://example.org/api"]
  max_ttl   = "15m"
}
`

func ringExpected() *config {
	return &config{
		Server: serverSettings{
			TrustDomain:     spiffeid.RequireTrustDomainFromString("example.org"),
			IssuerURL:       "https://sts.example.org:8443",
			BindAddress:     "127.0.0.1:8443",
			DataDir:         "/var/lib/spiffe-sts",
			WorkloadAPIAddr: "unix:///run/spire/agent.sock",
			LogLevel:        hclog.Info,
			JWKSMaxAge:      2 * time.Minute,
		},
		Issuer: issuerSettings{Algorithm: jwa.ES256(), DefaultTTL: 5 * time.Minute, RotationPeriod: 12 * time.Hour, PublicationWindow: 6 * time.Minute},
		Datastore: datastoreSettings{
			Kind:                   datastorePostgres,
			ConnectionStringFile:   "/etc/spiffe-sts/datastore/connection-string",
			ConnectionStringFileAt: attrAt{File: "sts.hcl", Line: 18, Key: `datastore "postgres": connection_string_file`},
			KEKFile:                "/etc/spiffe-sts/kek/kek",
			KEKFileAt:              attrAt{File: "sts.hcl", Line: 19, Key: `datastore "postgres": key_encryption_key_file`},
			RefreshInterval:        time.Second,
		},
		Rules: []stsid.Rule{{
			Pattern:   stsid.RequirePattern("spiffe://example.org/ns/*/sa/web"),
			Audiences: []string{"spiffe://example.org/api"},
			MaxTTL:    15 * time.Minute,
		}},
	}
}

func TestParseConfigKeyRing(t *testing.T) {
	const ds = `datastore "postgres": `
	runConfigCases(t, ringConfig, ringExpected, []configCase{
		{name: "baseline"},
		{
			name: "no datastore block is embedded",
			overrideConfig: func(s string) string {
				start, end := strings.Index(s, "datastore"), strings.Index(s, "policy")
				return s[:start] + s[end:]
			},
			overrideExpected: func(c *config) { c.Datastore = datastoreSettings{} },
		},
		{
			name: "embedded with a key-encryption key",
			overrideConfig: func(s string) string {
				return replace(`datastore "postgres"`, `datastore "embedded"`)(deleteLine("connection_string_file")(s))
			},
			overrideExpected: func(c *config) {
				c.Datastore = datastoreSettings{
					KEKFile:         "/etc/spiffe-sts/kek/kek",
					KEKFileAt:       attrAt{File: "sts.hcl", Line: 18, Key: `datastore "embedded": key_encryption_key_file`},
					RefreshInterval: time.Second,
				}
			},
		},
		{
			name:           "connection string inline",
			overrideConfig: replace(`connection_string_file  = "/etc/spiffe-sts/datastore/connection-string"`, `connection_string = "postgres://sts@db/sts"`),
			overrideExpected: func(c *config) {
				c.Datastore.ConnectionString = "postgres://sts@db/sts"
				c.Datastore.ConnectionStringFile, c.Datastore.ConnectionStringFileAt = "", attrAt{}
			},
		},
		{
			name: "schedule defaults",
			overrideConfig: func(s string) string {
				return deleteLine("rotation_period")(deleteLine("publication_window")(s))
			},
			overrideExpected: func(c *config) {
				c.Issuer.RotationPeriod, c.Issuer.PublicationWindow = 0, 0
				c.Datastore.ConnectionStringFileAt.Line -= 2
				c.Datastore.KEKFileAt.Line -= 2
			},
		},
		{
			name:           "bad jwks_max_age",
			overrideConfig: replace(`"2m"`, `"soon"`),
			expectErr:      `sts.hcl:7: server: jwks_max_age: invalid duration "soon"`,
		},
		{
			name:           "jwks_max_age not whole seconds",
			overrideConfig: replace(`"2m"`, `"1500ms"`),
			expectErr:      `sts.hcl:7: server: jwks_max_age: must be whole seconds (Cache-Control max-age), got "1500ms"`,
		},
		{
			name:           "bad rotation_period",
			overrideConfig: replace(`"12h"`, `"0s"`),
			expectErr:      `sts.hcl:13: issuer: rotation_period: must be positive, got "0s"`,
		},
		{
			name:           "bad publication_window",
			overrideConfig: replace(`"6m"`, `"6"`),
			expectErr:      `sts.hcl:14: issuer: publication_window: invalid duration "6"`,
		},
		{
			name:           "publication_window not shorter than rotation_period",
			overrideConfig: replace(`"6m"`, `"12h"`),
			expectErr:      `sts.hcl:14: issuer: publication_window: must be shorter than the rotation period (12h0m0s), got 12h0m0s`,
		},
		{
			name:           "rotation_period shorter than the default window",
			overrideConfig: func(s string) string { return replace(`"12h"`, `"3m"`)(deleteLine("publication_window")(s)) },
			expectErr:      `sts.hcl:13: issuer: rotation_period: must be longer than the publication window (4m0s), got 3m0s`,
		},
		{
			name: "jwks_max_age makes the default window too long",
			overrideConfig: func(s string) string {
				return replace(`"2m"`, `"24h"`)(deleteLine("rotation_period")(deleteLine("publication_window")(s)))
			},
			expectErr: `sts.hcl:7: server: jwks_max_age: twice it, the default publication window (48h0m0s), must be shorter than the rotation period (24h0m0s)`,
		},
		{
			name:           "unknown datastore",
			overrideConfig: replace(`datastore "postgres"`, `datastore "mysql"`),
			expectErr:      `sts.hcl:17: datastore "mysql": unknown datastore "mysql": want "embedded" or "postgres"`,
		},
		{
			name:           "two datastore blocks",
			overrideConfig: replace(`policy "`, "datastore \"embedded\" {}\n\npolicy \""),
			expectErr:      `sts.hcl:23: datastore "embedded": only one datastore block is allowed; the first is on line 17`,
		},
		{
			name: "unknown key in datastore",
			overrideConfig: replace(`refresh_interval        = "1s"`, `refresh_interval = "1s"
  pool_size = 4`),
			expectErr: `sts.hcl:21: Unsupported argument: An argument named "pool_size" is not expected here.`,
		},
		{
			name:           "datastore without label",
			overrideConfig: replace(`datastore "postgres"`, `datastore`),
			expectErr:      `sts.hcl:17: Missing kind for datastore: All datastore blocks must have 1 labels (kind).`,
		},
		{
			name:           "postgres without connection string",
			overrideConfig: deleteLine("connection_string_file"),
			expectErr:      `sts.hcl:17: ` + ds + `one of connection_string and connection_string_file is required`,
		},
		{
			name:           "postgres with both connection strings",
			overrideConfig: replace(`  key_encryption_key_file`, `  connection_string = "postgres://db/sts"`+"\n  key_encryption_key_file"),
			expectErr:      `sts.hcl:18: ` + ds + `connection_string_file: set only one of connection_string and connection_string_file`,
		},
		{
			name:           "postgres without key-encryption key",
			overrideConfig: deleteLine("key_encryption_key_file"),
			expectErr:      `sts.hcl:17: ` + ds + `key_encryption_key_file: is required for datastore "postgres": the keys in a shared database must be encrypted`,
		},
		{
			name:           "embedded with a connection string",
			overrideConfig: replace(`datastore "postgres"`, `datastore "embedded"`),
			expectErr:      `sts.hcl:18: datastore "embedded": connection_string_file: applies to datastore "postgres" only`,
		},
		{
			name:           "bad refresh_interval",
			overrideConfig: replace(`"1s"`, `"-1s"`),
			expectErr:      `sts.hcl:20: ` + ds + `refresh_interval: must be positive, got "-1s"`,
		},
	})
}

// TestMaxTokenTTL checks the key ring's MaxTokenTTL: the longest of the
// default TTL and the rules' max_ttl.
func TestMaxTokenTTL(t *testing.T) {
	t.Setenv(endpointSocketEnv, "")
	cfg, err := parseConfig("sts.hcl", []byte(ringConfig))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.maxTokenTTL(); got != 15*time.Minute {
		t.Errorf("maxTokenTTL = %s, want 15m", got)
	}
	rotation, window := cfg.Issuer.schedule(cfg.Server.JWKSMaxAge)
	if rotation != 12*time.Hour || window != 6*time.Minute {
		t.Errorf("schedule = %s, %s", rotation, window)
	}
	if _, window := (issuerSettings{}).schedule(0); window != 10*time.Minute {
		t.Errorf("default window = %s, want 10m (2 × the default max-age)", window)
	}
}

// TestShippedConfigs loads the configurations in deploy/, so that they
// never rot.
func TestShippedConfigs(t *testing.T) {
	t.Setenv(endpointSocketEnv, "unix:///run/spire/agent-sockets/agent.sock")
	if _, err := loadConfig("../../deploy/vm/sts.hcl"); err != nil {
		t.Errorf("deploy/vm/sts.hcl: %v", err)
	}
	cm, err := os.ReadFile("../../deploy/kubernetes/configmap.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// The file is the literal block under "sts.hcl: |", indented.
	_, after, ok := strings.Cut(string(cm), "sts.hcl: |\n")
	if !ok {
		t.Fatal("configmap.yaml has no sts.hcl: | block")
	}
	lines := strings.Split(after, "\n")
	indent := len(lines[0]) - len(strings.TrimLeft(lines[0], " "))
	var b strings.Builder
	for _, l := range lines {
		if strings.TrimSpace(l) != "" && len(l)-len(strings.TrimLeft(l, " ")) < indent {
			break // the end of the block
		}
		if len(l) >= indent {
			l = l[indent:]
		}
		b.WriteString(l + "\n")
	}
	path := filepath.Join(t.TempDir(), "sts.hcl")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := loadConfig(path)
	if err != nil {
		t.Fatalf("sts.hcl of configmap.yaml: %v", err)
	}
	if cfg.Datastore.Kind != datastorePostgres {
		t.Errorf("the Kubernetes configuration's datastore is %q, want postgres", cfg.Datastore.Kind)
	}
}
