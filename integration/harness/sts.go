package harness

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
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

	bin, dir string
	starts   int // processes started, for the log file names
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
		bin:        opts.Bin,
		dir:        opts.Dir,
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
	if err := sts.launch(ctx); err != nil {
		return nil, err
	}
	return sts, nil
}

// launch starts the process on the configuration file and waits until
// /readyz answers 200 (at most 45 s or until ctx ends). The first
// process logs to sts.log, the n-th restart to sts.n.log.
func (sts *STS) launch(ctx context.Context) error {
	logName := "sts.log"
	if sts.starts > 0 {
		logName = "sts." + strconv.Itoa(sts.starts) + ".log"
	}
	sts.starts++
	var err error
	if sts.Process, err = StartProcess(sts.bin, []string{"run", "-config", sts.ConfigPath}, nil, filepath.Join(sts.dir, logName)); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 45*time.Second)
	defer cancel()
	for {
		if ready(ctx, sts.HealthURL+"/readyz") {
			return nil
		}
		select {
		case <-sts.Exited():
			return fmt.Errorf("harness: spiffe-sts exited during start-up:\n%s", sts.Output())
		case <-ctx.Done():
			_ = sts.Stop()
			return fmt.Errorf("harness: spiffe-sts not ready: %w\n%s", ctx.Err(), sts.Output())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// drainTimeout bounds a graceful stop: spiffe-sts waits up to 10 s for
// the requests in flight after SIGTERM.
const drainTimeout = 20 * time.Second

// StopGracefully sends SIGTERM and waits for the process to exit on its
// own (at most 20 s or until ctx ends, then it is killed). It returns an
// error unless the process exited with status 0 and logged no incomplete
// shutdown: a graceful stop drains the requests in flight.
func (sts *STS) StopGracefully(ctx context.Context) error {
	if err := sts.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("harness: SIGTERM spiffe-sts: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, drainTimeout)
	defer cancel()
	select {
	case <-sts.Exited():
	case <-ctx.Done():
		_ = sts.Stop()
		return fmt.Errorf("harness: spiffe-sts did not exit after SIGTERM: %w", ctx.Err())
	}
	if err := sts.Err(); err != nil {
		return fmt.Errorf("harness: spiffe-sts exited with %v after SIGTERM:\n%s", err, sts.Output())
	}
	if strings.Contains(sts.Output(), "graceful shutdown incomplete") {
		return fmt.Errorf("harness: spiffe-sts did not drain its requests:\n%s", sts.Output())
	}
	return nil
}

// Restart stops the process gracefully ([STS.StopGracefully]) and starts
// a new one on the same configuration file, data directory and ports,
// waiting until it is ready. It must not run concurrently with other
// methods of sts; what it replaces is sts.Process.
func (sts *STS) Restart(ctx context.Context) error {
	if err := sts.StopGracefully(ctx); err != nil {
		return err
	}
	return sts.launch(ctx)
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
