package exchange

import (
	"crypto/tls"
	"errors"
	"fmt"
	"time"

	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
	"github.com/spiffe-sts/spiffe-sts/internal/ratelimit"
	"github.com/spiffe-sts/spiffe-sts/metrics"
	stsid "github.com/spiffe-sts/spiffe-sts/spiffeid"
)

// Defaults of the limits in Config. They leave the load of the published
// performance figures alone: no per-caller rate limit, and an in-flight
// cap far above the concurrency a core keeps busy (some 10,000 requests a
// second at about 0.1 ms each is one or two requests in flight).
const (
	// DefaultMaxInFlight is Config.MaxInFlight when zero.
	DefaultMaxInFlight = 1024
	// DefaultReadHeaderTimeout, DefaultReadTimeout, DefaultWriteTimeout
	// and DefaultIdleTimeout are the http.Server timeouts of HTTPServer
	// when the Config's are zero.
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultReadTimeout       = 30 * time.Second
	DefaultWriteTimeout      = 30 * time.Second
	DefaultIdleTimeout       = 2 * time.Minute
	// DefaultTLSMinVersion is Config.TLSMinVersion when zero.
	DefaultTLSMinVersion = tls.VersionTLS12
)

// overloadRetryAfter is the Retry-After of a request refused over
// Config.MaxInFlight: the requests in flight finish within milliseconds.
const overloadRetryAfter = time.Second

// errOverloaded refuses a request over Config.MaxInFlight: HTTP 503 with
// Retry-After: 1, gRPC Unavailable.
var errOverloaded error = refusal{
	err: protocol.ErrTemporarilyUnavailable.WithDescription("the server is overloaded; retry later").
		WithRetryAfter(overloadRetryAfter),
	detail:  "overloaded: the in-flight request cap is reached",
	outcome: metrics.OutcomeOverloaded,
}

// validateLimits checks the limits of cfg and fills in their defaults.
func validateLimits(cfg *Config) error {
	switch {
	case cfg.MaxInFlight < 0:
		return errors.New("exchange: MaxInFlight must not be negative")
	case cfg.MaxRateLimitKeys < 0:
		return errors.New("exchange: MaxRateLimitKeys must not be negative")
	case cfg.ReadHeaderTimeout < 0 || cfg.ReadTimeout < 0 || cfg.WriteTimeout < 0 || cfg.IdleTimeout < 0:
		return errors.New("exchange: server timeouts must not be negative")
	case cfg.TLSMinVersion != 0 && cfg.TLSMinVersion != tls.VersionTLS12 && cfg.TLSMinVersion != tls.VersionTLS13:
		return errors.New("exchange: TLSMinVersion must be TLS 1.2 or 1.3")
	}
	if cfg.DefaultRateLimit != nil {
		if err := cfg.DefaultRateLimit.Check(); err != nil {
			return fmt.Errorf("exchange: DefaultRateLimit: %w", err)
		}
	}
	defaults := []struct {
		v *time.Duration
		d time.Duration
	}{
		{&cfg.ReadHeaderTimeout, DefaultReadHeaderTimeout},
		{&cfg.ReadTimeout, DefaultReadTimeout},
		{&cfg.WriteTimeout, DefaultWriteTimeout},
		{&cfg.IdleTimeout, DefaultIdleTimeout},
	}
	for _, f := range defaults {
		if *f.v == 0 {
			*f.v = f.d
		}
	}
	if cfg.MaxInFlight == 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.TLSMinVersion == 0 {
		cfg.TLSMinVersion = DefaultTLSMinVersion
	}
	return nil
}

// admit counts a request of the token, introspection or gRPC endpoint in
// flight, and reports false, having counted nothing, when
// Config.MaxInFlight are in flight already: the request is then refused
// with errOverloaded. Every admitted request calls release when done.
// Requests are admitted once read, so that a body trickling in holds no
// slot: over HTTP after authentication, the rate limit and the body,
// over gRPC when Exchange runs (the generated handler has decoded the
// message before).
func (s *Server) admit() bool {
	if s.inFlight.Add(1) > int64(s.cfg.MaxInFlight) {
		s.inFlight.Add(-1)
		return false
	}
	return true
}

// release ends a request that admit counted.
func (s *Server) release() { s.inFlight.Add(-1) }

// charge takes one request of caller, authenticated, from its token
// bucket, whose limit is the RateLimit of the policy rule that applies to
// the caller (the first that matches, as for everything else), else
// Config.DefaultRateLimit; without either, or with an Unlimited one, the
// caller is not limited. Over
// its limit the refusal is protocol.RateLimited, asking the caller to
// wait until its bucket has a token, counted as metrics.OutcomeRateLimited;
// rule is then the rule that applied, nil when none did.
func (s *Server) charge(caller stsid.Peer) (rule *stsid.Rule, err error) {
	return s.chargeUnder(s.policy.Load(), caller)
}

// chargeUnder is charge with the rule of policy p.
func (s *Server) chargeUnder(p *stsid.Policy, caller stsid.Peer) (rule *stsid.Rule, err error) {
	rule, _ = p.RuleFor(caller.ID)
	limit := s.cfg.DefaultRateLimit
	if rule != nil && rule.RateLimit != nil {
		limit = rule.RateLimit
	}
	if limit == nil || limit.Unlimited {
		return rule, nil
	}
	ok, wait := s.limits.Allow(caller.ID.String(), ratelimit.Limit{PerSecond: limit.PerSecond, Burst: limit.Burst})
	if ok {
		return rule, nil
	}
	e := protocol.RateLimited(wait)
	e = e.WithDescription("the client's rate limit is exceeded; retry after %d s", e.RetryAfterSeconds())
	source, pattern := "the server default (limits)", ""
	if rule != nil {
		pattern = rule.Pattern.String()
		if rule.RateLimit != nil {
			source = "policy rule " + pattern
		}
	}
	if s.cfg.Metrics != nil {
		s.cfg.Metrics.RateLimited(pattern)
	}
	s.log.Debug("caller over its rate limit", logKeySPIFFEID, caller.ID.String(), logKeyRetryAfter, wait.String())
	return rule, refusal{
		err:     e,
		detail:  fmt.Sprintf("rate limited: %g requests/s, burst %d, of %s", limit.PerSecond, limit.Burst, source),
		outcome: metrics.OutcomeRateLimited,
	}
}
