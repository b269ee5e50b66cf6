package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/spiffe-sts/spiffe-sts/helper"
	"github.com/spiffe-sts/spiffe-sts/helper/atomicdir"
	"github.com/spiffe-sts/spiffe-sts/internal/cmdutil"
)

const shutdownTimeout = 5 * time.Second

func newLogger(cfg *config, w io.Writer) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:       "spiffe-sts-helper",
		Level:      cfg.LogLevel,
		JSONFormat: cfg.LogJSON,
		Output:     w,
	})
}

// run runs the helper with the configuration file at configPath until ctx
// is done, or, with daemon_mode = false, until the first set is written.
// It blocks until the Workload API delivers the X509-SVID. Logs go to
// stderr.
func run(ctx context.Context, configPath string, stderr io.Writer) error {
	cfg, err := loadConfig(configPath)
	if err != nil {
		return err
	}
	log := newLogger(cfg, stderr)
	log.Info("starting", logKeyConfig, configPath, logKeyDir, cfg.OutputDir, logKeyTokens, len(cfg.Tokens), logKeyOneShot, !cfg.Daemon)

	writer, err := atomicdir.New(cfg.OutputDir, atomicdir.Options{FileMode: cfg.FileMode, DirMode: cfg.DirMode})
	if err != nil {
		return err
	}
	// The health listener is up before the SVID arrives, so that liveness
	// probes pass while the helper waits for it.
	var started atomic.Pointer[helper.Helper]
	if cfg.HealthAddress != "" {
		stop, err := serve(ctx, "tcp", cfg.HealthAddress, healthHandler(func() error {
			h := started.Load()
			if h == nil {
				return errors.New("waiting for the X509-SVID")
			}
			return h.Ready()
		}), log.Named("health"))
		if err != nil {
			return fmt.Errorf("health listener: %w", err)
		}
		defer stop()
	}

	clientOpts := workloadapi.WithClientOptions(workloadapi.WithAddr(cfg.AgentAddress))
	src, err := workloadapi.NewX509Source(ctx, clientOpts)
	if err != nil {
		return fmt.Errorf("X509-SVID from the Workload API: %w", err)
	}
	defer src.Close()
	hcfg := helper.Config{
		Source:    src,
		IssuerURL: cfg.IssuerURL,
		STSID:     cfg.STSID,
		Tokens:    cfg.Tokens,
		Files:     cfg.Files,
		Writer:    writer,
		OnUpdate:  notifier(cfg, log),
		OneShot:   !cfg.Daemon,
		Timeout:   cfg.Timeout,
		Logger:    log,
	}
	for _, t := range cfg.Tokens {
		if t.Grant == helper.GrantJWTSVID {
			client, err := workloadapi.New(ctx, workloadapi.WithAddr(cfg.AgentAddress))
			if err != nil {
				return fmt.Errorf("the Workload API client: %w", err)
			}
			defer client.Close()
			hcfg.JWTSource = client
			break
		}
	}
	h, err := helper.New(hcfg)
	if err != nil {
		return err
	}
	started.Store(h)
	if cfg.ListenAddress != "" {
		stop, err := serve(ctx, cfg.ListenNetwork, cfg.ListenAddress, h.Handler(), log.Named("listen"))
		if err != nil {
			return fmt.Errorf("token endpoint: %w", err)
		}
		defer stop()
	}
	if err := h.Run(ctx); err != nil {
		return err
	}
	if h.Current() == nil {
		return errors.New("stopped before the first set was written")
	}
	log.Info("stopped")
	return nil
}

// healthHandler serves /healthz (the process is up) and /readyz (a valid
// set is written).
func healthHandler(ready func() error) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	return mux
}

// serve serves h on network/addr until stop is called. A Unix socket is
// made owner-only and replaces a stale socket file.
func serve(ctx context.Context, network, addr string, h http.Handler, log hclog.Logger) (stop func(), err error) {
	if network == "unix" {
		if fi, err := os.Lstat(addr); err == nil && fi.Mode()&os.ModeSocket != 0 {
			_ = os.Remove(addr)
		}
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	if network == "unix" {
		if err := os.Chmod(addr, 0o600); err != nil {
			_ = ln.Close()
			return nil, err
		}
	}
	stop = cmdutil.ServeHTTP(ln, h, log, shutdownTimeout, func(err error) {
		log.Error("listener stopped", logKeyError, err)
	})
	log.Info("listening", logKeyAddress, ln.Addr().String())
	return stop, nil
}

// checkHealth asks the health_address of the configuration whether the
// helper is ready.
func checkHealth(configPath string, stdout io.Writer) error {
	cfg, err := loadConfig(configPath)
	if err != nil {
		return err
	}
	if cfg.HealthAddress == "" {
		return errors.New("-healthcheck needs health_address in the configuration")
	}
	host, port, _ := net.SplitHostPort(cfg.HealthAddress)
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + net.JoinHostPort(host, port) + "/readyz")
	if err != nil {
		return fmt.Errorf("health check: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("not ready: %s", resp.Status)
	}
	_, _ = stdout.Write(body)
	return nil
}
