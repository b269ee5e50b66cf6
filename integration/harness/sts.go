package harness

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// STSOptions configure [StartSTS].
type STSOptions struct {
	// Bin is the spiffe-sts binary, registered in SPIRE by its path.
	Bin string
	// Port is the TLS port on 127.0.0.1; 0 picks a free one.
	Port int
	// DataDir holds the signing keys; required, reused across restarts.
	DataDir string
	// Dir receives the configuration file and the log.
	Dir string
	// Policy is the HCL text of the policy blocks.
	Policy string
	// LogLevel is spiffe-sts's log_level; default "debug".
	LogLevel string
	// IssuerURL is issuer_url; default https://127.0.0.1:Port. Replicas
	// behind one name share it.
	IssuerURL string
	// ServerHCL is extra lines for the server block (jwks_max_age, ...).
	ServerHCL string
	// ExtraHCL is extra blocks after the server block (issuer, datastore).
	ExtraHCL string
}

// STS is a running spiffe-sts process.
type STS struct {
	*Process
	// URL is the issuer URL: STSOptions.IssuerURL, else
	// https://127.0.0.1:port.
	URL string
	// Addr is the TLS listener, 127.0.0.1:port.
	Addr string
	// Port is the TLS port.
	Port int
	// HealthURL is the plain-HTTP health listener.
	HealthURL string
	// DataDir and ConfigPath are as configured.
	DataDir, ConfigPath string
}

// StartSTS writes a configuration for the SPIRE deployment s and starts
// spiffe-sts with it, waiting until /readyz answers 200 (at most 45 s or
// until ctx ends). On error the process is stopped.
func StartSTS(ctx context.Context, s *SPIRE, opts STSOptions) (*STS, error) {
	if opts.Bin == "" || opts.DataDir == "" || opts.Dir == "" {
		return nil, errors.New("harness: StartSTS: Bin, DataDir and Dir are required")
	}
	if opts.LogLevel == "" {
		opts.LogLevel = "debug"
	}
	var err error
	if opts.Port == 0 {
		if opts.Port, err = FreePort(); err != nil {
			return nil, err
		}
	}
	healthPort, err := FreePort()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(opts.Port)
	if opts.IssuerURL == "" {
		opts.IssuerURL = "https://" + addr
	}
	sts := &STS{
		URL:        opts.IssuerURL,
		Addr:       addr,
		Port:       opts.Port,
		HealthURL:  "http://127.0.0.1:" + strconv.Itoa(healthPort),
		DataDir:    opts.DataDir,
		ConfigPath: filepath.Join(opts.Dir, "sts.hcl"),
	}
	config := fmt.Sprintf(`server {
  trust_domain        = %q
  issuer_url          = %q
  bind_address        = "127.0.0.1:%d"
  health_address      = "127.0.0.1:%d"
  data_dir            = %q
  workload_api_socket = %q
  log_level           = %q
%s
}
%s
%s`, s.TrustDomain().Name(), sts.URL, opts.Port, healthPort, opts.DataDir, s.WorkloadAPIAddr(), opts.LogLevel, opts.ServerHCL, opts.ExtraHCL, opts.Policy)
	if err := os.WriteFile(sts.ConfigPath, []byte(config), 0o600); err != nil {
		return nil, fmt.Errorf("harness: write spiffe-sts config: %w", err)
	}
	if sts.Process, err = StartProcess(opts.Bin, []string{"run", "-config", sts.ConfigPath}, nil, filepath.Join(opts.Dir, "sts.log")); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 45*time.Second)
	defer cancel()
	for {
		if ready(ctx, sts.HealthURL+"/readyz") {
			return sts, nil
		}
		select {
		case <-sts.Exited():
			return nil, fmt.Errorf("harness: spiffe-sts exited during start-up:\n%s", sts.Output())
		case <-ctx.Done():
			_ = sts.Stop()
			return nil, fmt.Errorf("harness: spiffe-sts not ready: %w\n%s", ctx.Err(), sts.Output())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func ready(ctx context.Context, url string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}
