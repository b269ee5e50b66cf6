package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"reflect"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"

	"github.com/spiffe-sts/spiffe-sts/audit"
	"github.com/spiffe-sts/spiffe-sts/exchange"
	"github.com/spiffe-sts/spiffe-sts/exchange/extissuer"
	"github.com/spiffe-sts/spiffe-sts/internal/cmdutil"
	"github.com/spiffe-sts/spiffe-sts/issuer"
	"github.com/spiffe-sts/spiffe-sts/issuer/keyring"
	"github.com/spiffe-sts/spiffe-sts/metrics"
	stsid "github.com/spiffe-sts/spiffe-sts/spiffeid"
)

// shutdownTimeout bounds the graceful shutdown of the listeners.
const shutdownTimeout = 10 * time.Second

// validate checks the configuration file at path and reports the outcome
// on stdout.
func validate(path string, stdout io.Writer) error {
	cfg, err := loadConfig(path)
	if err != nil {
		return err
	}
	summary := plural(len(cfg.Rules), "policy rule", "policy rules")
	if n := len(cfg.ExternalIssuers); n > 0 {
		summary += ", " + plural(n, "external issuer", "external issuers")
	}
	_, err = fmt.Fprintf(stdout, "%s: configuration OK (%s)\n", path, summary)
	return err
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}

// newLogger returns the root logger, writing to w.
func newLogger(s serverSettings, w io.Writer) hclog.Logger {
	return hclog.New(&hclog.LoggerOptions{
		Name:       "spiffe-sts",
		Level:      s.LogLevel,
		JSONFormat: s.LogJSON,
		Output:     w,
	})
}

// run runs the server with the configuration file at configPath until ctx
// is done, then shuts it down gracefully and returns nil. It fetches the
// JWKS of the external issuers, and blocks until the Workload API delivers
// the server's X509-SVID and bundles. SIGHUP reloads the policy blocks of
// the file. Logs go to stderr; stdout is not written.
func run(ctx context.Context, configPath string, stdout, stderr io.Writer) error {
	cfg, err := loadConfig(configPath)
	if err != nil {
		return err
	}
	log := newLogger(cfg.Server, stderr)

	// Register SIGHUP first: its default action would end the process.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	// One registry for the process, never the global one; it is served
	// on the health listener's /metrics.
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	// The health listener is up before the SVID arrives, so liveness
	// probes pass while readiness probes fail.
	var health healthState
	if cfg.Server.HealthAddress != "" {
		stop, err := startHealthServer(cfg.Server.HealthAddress, healthMux(health.ready, reg), log.Named("health"))
		if err != nil {
			return err
		}
		defer stop()
	}

	// The audit trail, before anything is decided.
	var trail *audit.Log
	if cfg.Audit.Path != "" {
		trail, err = audit.Open(audit.Config{Path: cfg.Audit.Path, Stdout: stdout, MaxSize: cfg.Audit.MaxSize, MaxFiles: cfg.Audit.MaxFiles, Metrics: reg})
		if err != nil {
			return err
		}
		defer trail.Close()
		log.Info("audit trail", logKeyPath, cfg.Audit.Path, logKeyRequired, cfg.Audit.Required)
	}

	// External issuers come first: a JWKS that cannot be loaded stops
	// start-up before it waits for the Workload API.
	externalIssuers, err := newExternalIssuers(ctx, cfg.ExternalIssuers)
	if err != nil {
		if ctx.Err() != nil {
			log.Info("stopped while loading the keys of external issuers")
			return nil
		}
		return err
	}
	for _, ext := range externalIssuers {
		log.Info("external issuer ready", logKeyExternalIssuer, ext.Name(), logKeyIssuer, ext.Issuer())
	}

	// The key ring too: without a ring (a store that cannot be reached, a
	// record that does not open) there is no key to sign with.
	ring, closeStore, err := startKeyRing(ctx, cfg)
	if err != nil {
		if ctx.Err() != nil {
			log.Info("stopped while loading the key ring")
			return nil
		}
		return fmt.Errorf("signing keys: %w", err)
	}
	defer closeStore()
	ringCtx, stopRing := context.WithCancel(ctx)
	defer stopRing()
	ringLog := log.Named("keyring")
	watcher := newRingWatcher(ring, ringLog)
	refreshEvery := cfg.Datastore.RefreshInterval
	if refreshEvery == 0 {
		refreshEvery = keyring.DefaultRefreshInterval
	}
	go func() { _ = ring.Run(ringCtx) }()
	go watcher.run(ringCtx, refreshEvery)

	log.Info("waiting for the X509-SVID and bundles from the Workload API", logKeyAddress, cfg.Server.WorkloadAPIAddr)
	client, err := workloadapi.New(ctx,
		workloadapi.WithAddr(cfg.Server.WorkloadAPIAddr),
		workloadapi.WithLogger(spiffeLogger{log.Named("workloadapi")}),
	)
	if err != nil {
		return fmt.Errorf("workload API client: %w", err)
	}
	defer client.Close()
	x509Source, err := workloadapi.NewX509Source(ctx, workloadapi.WithClient(client))
	if err != nil {
		if ctx.Err() != nil {
			log.Info("stopped while waiting for the X509-SVID")
			return nil
		}
		return fmt.Errorf("workload API: X509-SVID: %w", err)
	}
	defer x509Source.Close()
	bundleSource, err := workloadapi.NewBundleSource(ctx, workloadapi.WithClient(client))
	if err != nil {
		if ctx.Err() != nil {
			log.Info("stopped while waiting for the JWT bundles")
			return nil
		}
		return fmt.Errorf("workload API: bundles: %w", err)
	}
	defer bundleSource.Close()

	svid, err := x509Source.GetX509SVID()
	if err != nil {
		return fmt.Errorf("workload API: X509-SVID: %w", err)
	}
	if td := svid.ID.TrustDomain(); td != cfg.Server.TrustDomain {
		return fmt.Errorf("own X509-SVID %s is not in trust domain %q (server.trust_domain)", svid.ID, cfg.Server.TrustDomain.Name())
	}

	// Bundle confirmations: the source's first update counts as one.
	trusted := append([]spiffeid.TrustDomain{cfg.Server.TrustDomain}, cfg.Server.FederatesWith...)
	bundles := newBundleWatcher(client, trusted, log.Named("workloadapi"))
	bundles.seed(svid.Certificates[0], x509Source)
	go bundles.run(ctx, bundlePollInterval(cfg.Server.MaxBundleAge))
	rotation, _ := cfg.Issuer.schedule(cfg.Server.JWKSMaxAge)
	if err := metrics.RegisterState(reg, serverState(ring, rotation, x509Source, bundles)); err != nil {
		return fmt.Errorf("metrics: %w", err)
	}

	keys, err := issuer.NewRingKeys(ring)
	if err != nil {
		return fmt.Errorf("signing keys: %w", err)
	}
	// issuer and exchange name their loggers themselves.
	iss, err := issuer.New(issuer.Config{
		IssuerURL:  cfg.Server.IssuerURL,
		Keys:       keys,
		DefaultTTL: cfg.Issuer.DefaultTTL,
		Logger:     log,
	})
	if err != nil {
		return err
	}
	proxies, err := cfg.Server.forwardedPolicy(x509Source)
	if err != nil {
		return err
	}
	sts, err := exchange.New(exchange.Config{
		IssuerURL:             cfg.Server.IssuerURL,
		TrustDomain:           cfg.Server.TrustDomain,
		FederatedTrustDomains: cfg.Server.FederatesWith,
		SVIDs:                 x509Source,
		X509Bundles:           x509Source,
		JWTBundles:            bundleSource,
		Policy:                cfg.Policy,
		ExternalIssuers:       externalIssuers,
		Minter:                iss,
		Keys:                  iss.KeySet(),
		JWKSMaxAge:            cfg.Server.JWKSMaxAge,
		Logger:                log,
		Metrics:               metrics.NewExchange(reg),
		Audit:                 auditSink(trail),
		AuditRequired:         cfg.Audit.Required,
		Bundles:               bundles,
		MaxBundleAge:          cfg.Server.MaxBundleAge,
		BundleHardLimit:       cfg.Server.BundleHardLimit,
		Forwarded:             proxies,
		DefaultRateLimit:      cfg.Limits.DefaultRateLimit,
		MaxInFlight:           cfg.Limits.MaxInFlight,
		ReadHeaderTimeout:     cfg.Limits.ReadHeaderTimeout,
		ReadTimeout:           cfg.Limits.ReadTimeout,
		WriteTimeout:          cfg.Limits.WriteTimeout,
		IdleTimeout:           cfg.Limits.IdleTimeout,
		TLSMinVersion:         cfg.Limits.TLSMinVersion,
	})
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", cfg.Server.BindAddress)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := sts.HTTPServer(x509Source)
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.ServeTLS(ln, "", "") }()
	health.sts.Store(sts)
	log.Info("serving",
		logKeyAddress, ln.Addr().String(),
		logKeyIssuer, cfg.Server.IssuerURL,
		logKeySPIFFEID, svid.ID.String(),
		logKeyRules, len(cfg.Rules),
	)

	reload := &reloader{path: configPath, running: cfg, sts: sts, ring: ring, log: log}
	svidRotation := svidWatcher{log: log, last: leafSum(svid)}
	for {
		select {
		case <-ctx.Done():
			log.Info("shutting down")
			health.sts.Store(nil) // readyz fails while connections drain
			shutdown(srv, log)
			return nil
		case err := <-serveErr:
			return fmt.Errorf("serve: %w", err)
		case <-hup:
			_ = reload.reload()
		case <-x509Source.Updated():
			svidRotation.check(x509Source)
		}
	}
}

// jwksStartTimeout bounds the first JWKS fetch of an external issuer.
const jwksStartTimeout = 30 * time.Second

// newExternalIssuers builds the external issuers, reading their JWKS and CA
// files and fetching their JWKS URLs (each within jwksStartTimeout).
func newExternalIssuers(ctx context.Context, settings []externalIssuerSettings) ([]exchange.ExternalIssuer, error) {
	var issuers []exchange.ExternalIssuer
	for _, s := range settings {
		cfg := extissuer.Config{
			Name:       s.Name,
			Issuer:     s.Issuer,
			JWKSURL:    s.JWKSURL,
			Audience:   s.Audience,
			Algorithms: s.Algorithms,
		}
		if s.JWKSFile != "" {
			keys, err := readJWKSFile(s.JWKSFile, s.JWKSFileAt)
			if err != nil {
				return nil, err
			}
			cfg.JWKS = keys
		}
		if s.JWKSURL != "" {
			client, err := jwksClient(s.CAFile)
			if err != nil {
				return nil, fmt.Errorf("%s %q: %w", blockExternal, s.Name, err)
			}
			cfg.HTTPClient = client
		}
		fetchCtx, cancel := context.WithTimeout(ctx, jwksStartTimeout)
		ext, err := extissuer.New(fetchCtx, cfg)
		cancel()
		switch {
		case err != nil && s.JWKSFile != "":
			// With fixed keys, what New can refuse is the file's keys.
			return nil, s.JWKSFileAt.errorf("%s: %w", s.JWKSFile, err)
		case err != nil:
			return nil, fmt.Errorf("%s %q: %w", blockExternal, s.Name, err)
		}
		issuers = append(issuers, ext)
	}
	return issuers, nil
}

// readJWKSFile reads and parses the JWKS document (RFC 7517 §5) at path;
// errors are configErrors at at, the jwks_file attribute.
func readJWKSFile(path string, at attrAt) (jwk.Set, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, at.errorf("%w", err)
	}
	set, err := jwk.Parse(b)
	if err != nil {
		return nil, at.errorf("%s is not a usable JWKS document: %w", path, err)
	}
	return set, nil
}

// jwksClient returns the HTTP client for a JWKS URL: it trusts the PEM
// certificates in caFile or, when caFile is empty, the system roots, and
// honours the proxy environment variables.
func jwksClient(caFile string) (*http.Client, error) {
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pemBytes, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		tlsConfig.RootCAs = x509.NewCertPool()
		if !tlsConfig.RootCAs.AppendCertsFromPEM(pemBytes) {
			return nil, fmt.Errorf("ca_file %s: no PEM certificate", caFile)
		}
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = tlsConfig
	return &http.Client{Transport: transport, Timeout: jwksStartTimeout}, nil
}

// shutdown stops srv, waiting up to shutdownTimeout for requests in flight.
func shutdown(srv *http.Server, log hclog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		log.Warn("graceful shutdown incomplete", logKeyError, err.Error())
		_ = srv.Close()
	}
}

// svidWatcher logs when the server's own X509-SVID changes. The source's
// Updated channel also fires for bundle-only updates, so it compares the
// leaf certificates.
type svidWatcher struct {
	log  hclog.Logger
	last [sha256.Size]byte
}

func (w *svidWatcher) check(src x509svid.Source) {
	svid, err := src.GetX509SVID()
	if err != nil {
		w.log.Warn("no X509-SVID after a Workload API update", logKeyError, err.Error())
		return
	}
	sum := leafSum(svid)
	if sum == w.last {
		return
	}
	w.last = sum
	w.log.Info("X509-SVID rotated",
		logKeySPIFFEID, svid.ID.String(),
		logKeyExpires, svid.Certificates[0].NotAfter.UTC().Format(time.RFC3339),
	)
}

func leafSum(svid *x509svid.SVID) [sha256.Size]byte {
	return sha256.Sum256(svid.Certificates[0].Raw)
}

// policySetter is the part of *exchange.Server that reloading needs.
type policySetter interface {
	SetPolicy(*stsid.Policy)
}

// reloader re-reads the configuration file and replaces the policy of the
// running server. Only policy blocks, delegation and rate_limit included,
// take effect; other sections, external_issuer and limits blocks among
// them, need a restart.
type reloader struct {
	path string
	// running is the configuration the server started with.
	running *config
	sts     policySetter
	// ring, when not nil, learns a raised maximum token lifetime, so that
	// retired keys stay published until the longer tokens expire.
	ring maxTTLSetter
	log  hclog.Logger
}

// maxTTLSetter is the part of *keyring.Manager that reloading needs.
type maxTTLSetter interface {
	SetMaxTokenTTL(time.Duration)
	MaxTokenTTL() time.Duration
}

// reload loads the configuration file and applies its policy. On any
// error it logs and returns it, and the current policy stays in force.
func (r *reloader) reload() error {
	r.log.Info("reloading the policy", logKeyConfig, r.path)
	cfg, err := loadConfig(r.path)
	if err != nil {
		r.log.Error("configuration reload failed; keeping the current policy", logKeyError, err.Error())
		return err
	}
	var changed []string
	if !reflect.DeepEqual(cfg.Server, r.running.Server) {
		changed = append(changed, blockServer)
	}
	if !reflect.DeepEqual(cfg.Issuer, r.running.Issuer) {
		changed = append(changed, blockIssuer)
	}
	if !reflect.DeepEqual(cfg.ExternalIssuers, r.running.ExternalIssuers) {
		changed = append(changed, blockExternal)
	}
	if !reflect.DeepEqual(cfg.Datastore, r.running.Datastore) {
		changed = append(changed, blockDatastore)
	}
	if !reflect.DeepEqual(cfg.Audit, r.running.Audit) {
		changed = append(changed, blockAudit)
	}
	if !reflect.DeepEqual(cfg.Limits, r.running.Limits) {
		changed = append(changed, blockLimits)
	}
	if len(changed) > 0 {
		r.log.Warn("changes outside policy blocks take effect only after a restart", logKeySections, changed)
	}
	if r.ring != nil {
		// Raise before the new policy mints longer tokens.
		if ttl := maxTokenTTL(r.running.Issuer.DefaultTTL, cfg.Rules); ttl > r.ring.MaxTokenTTL() {
			r.ring.SetMaxTokenTTL(ttl)
			r.log.Info("key ring keeps retired keys longer for the longer tokens", logKeyMaxTTL, ttl.String())
		}
	}
	r.sts.SetPolicy(cfg.Policy)
	r.log.Info("policy reloaded", logKeyRules, len(cfg.Rules))
	return nil
}

// healthState holds the exchange server once it exists.
type healthState struct {
	sts atomic.Pointer[exchange.Server]
}

var errNotStarted = errors.New("the token server has not started")

// ready is nil when the token server exists and is ready.
func (h *healthState) ready() error {
	sts := h.sts.Load()
	if sts == nil {
		return errNotStarted
	}
	return sts.Ready()
}

// startHealthServer serves h over plain HTTP on addr and returns the
// function that stops it.
func startHealthServer(addr string, h http.Handler, log hclog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("health listener: %w", err)
	}
	stop = cmdutil.ServeHTTP(ln, h, log, shutdownTimeout, func(err error) {
		log.Error("health listener stopped", logKeyError, err.Error())
	})
	log.Info("health listener started", logKeyAddress, ln.Addr().String())
	return stop, nil
}

// spiffeLogger adapts hclog to go-spiffe's logger interface.
type spiffeLogger struct{ log hclog.Logger }

func (l spiffeLogger) Debugf(format string, args ...any) { l.log.Debug(fmt.Sprintf(format, args...)) }
func (l spiffeLogger) Infof(format string, args ...any)  { l.log.Info(fmt.Sprintf(format, args...)) }
func (l spiffeLogger) Warnf(format string, args ...any)  { l.log.Warn(fmt.Sprintf(format, args...)) }
func (l spiffeLogger) Errorf(format string, args ...any) { l.log.Error(fmt.Sprintf(format, args...)) }

// healthMux serves exchange.HealthHandler(ready) and, at /metrics, the
// metrics of reg.
func healthMux(ready func() error, reg prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/", exchange.HealthHandler(ready))
	mux.Handle("GET /metrics", metrics.Handler(reg))
	return mux
}

// auditSink is trail as an exchange.AuditSink: nil (no audit trail) when
// trail is nil.
func auditSink(trail *audit.Log) exchange.AuditSink {
	if trail == nil {
		return nil
	}
	return trail
}

// bundlePollInterval is how often the Workload API is asked for its
// bundles: a third of max_bundle_age, so that two polls may fail before
// readiness does, within [1s, 1m].
func bundlePollInterval(maxAge time.Duration) time.Duration {
	if maxAge == 0 {
		maxAge = exchange.DefaultMaxBundleAge
	}
	return min(max(maxAge/3, time.Second), time.Minute)
}

// serverState reads the key ring, the own SVID and the bundle
// confirmations for the metrics.
func serverState(ring *keyring.Manager, rotationPeriod time.Duration, svids x509svid.Source, bundles *bundleWatcher) metrics.State {
	return metrics.State{
		Keys: func() []metrics.Key {
			var keys []metrics.Key
			for _, k := range ring.Keys() {
				keys = append(keys, metrics.Key{ID: k.KeyID, State: k.State.String()})
			}
			return keys
		},
		NextRotation: func() (time.Duration, bool) {
			return nextRotation(ring.Keys(), rotationPeriod, time.Now())
		},
		StoreReachable: func() bool { return ring.Status().StoreReachable },
		SVIDExpiry: func() (time.Time, bool) {
			svid, err := svids.GetX509SVID()
			if err != nil {
				return time.Time{}, false
			}
			return svid.Certificates[0].NotAfter, true
		},
		Bundles:              bundles.bundleAges,
		WorkloadAPIConnected: bundles.Connected,
		SVIDRenewalOverdue:   bundles.RenewalOverdue,
	}
}

// nextRotation is the time until the next key activates: the earliest
// next key's Activate, or the active key's Activate plus the rotation
// period when no next key exists yet; negative when that is past (the
// rotation is stuck).
func nextRotation(keys []keyring.KeyInfo, rotationPeriod time.Duration, now time.Time) (time.Duration, bool) {
	var next, active time.Time
	for _, k := range keys {
		switch k.State {
		case keyring.StateNext:
			if next.IsZero() || k.Activate.Before(next) {
				next = k.Activate
			}
		case keyring.StateActive:
			active = k.Activate
		}
	}
	switch {
	case !next.IsZero():
		return next.Sub(now), true
	case !active.IsZero():
		return active.Add(rotationPeriod).Sub(now), true
	}
	return 0, false
}
