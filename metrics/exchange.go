package metrics

import (
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Namespace prefixes every metric of spiffe-sts.
const Namespace = "spiffe_sts"

// Transports of a token request: the label values of "transport".
const (
	TransportHTTP = "http"
	TransportGRPC = "grpc"
)

// OutcomeOK is the outcome of a request that got a token; refusals have
// their OAuth error code (RFC 6749 §5.2, RFC 8693 §2.2.2) as outcome,
// except those of the server's limits, temporarily_unavailable on the
// wire, which have their own.
const OutcomeOK = "ok"

// Outcomes of the refusals of a limit: a caller over its rate limit, and
// a request over the server's in-flight cap.
const (
	OutcomeRateLimited = "rate_limited"
	OutcomeOverloaded  = "overloaded"
)

// Grant type label values: the two grants the server supports, and
// "other" for anything a client sent (an unbounded set otherwise).
const (
	GrantTokenExchange     = "token_exchange"
	GrantClientCredentials = "client_credentials"
	GrantOther             = "other"
)

// grantLabel maps a grant_type parameter to its label value.
func grantLabel(grantType string) string {
	switch grantType {
	case "urn:ietf:params:oauth:grant-type:token-exchange":
		return GrantTokenExchange
	case "client_credentials":
		return GrantClientCredentials
	}
	return GrantOther
}

// outcomes are the known outcome label values; any other code a refusal
// might carry is counted as "other".
var outcomes = []string{
	OutcomeOK, "invalid_request", "invalid_client", "invalid_grant", "unauthorized_client",
	"unsupported_grant_type", "invalid_scope", "invalid_target", "server_error", "temporarily_unavailable",
	OutcomeRateLimited, OutcomeOverloaded, "other",
}

// DurationBuckets are the latency histogram's buckets, in seconds: from
// 100µs, so that sub-millisecond work (a cached JWT-SVID, a
// client_credentials grant) resolves, to 1s.
var DurationBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1}

// Request is one finished token request.
type Request struct {
	// Transport is TransportHTTP or TransportGRPC.
	Transport string
	// GrantType is the grant_type parameter as sent.
	GrantType string
	// Outcome is OutcomeOK or the OAuth error code.
	Outcome string
	// Rule is the pattern of the policy rule that issued the token; empty
	// when none did.
	Rule string
	// Duration is the time the server spent on it.
	Duration time.Duration
}

type requestKey struct{ transport, grant, outcome string }

type requestChildren struct {
	count    prometheus.Counter
	duration prometheus.Observer
}

// Exchange records the token endpoint's requests. Its label children are
// resolved once, at construction, for every combination of the closed
// label sets, so that recording a request allocates nothing.
type Exchange struct {
	inFlight prometheus.Gauge
	children map[requestKey]requestChildren
	issued   *prometheus.CounterVec
	byRule   sync.Map // rule pattern -> prometheus.Counter
	svidHit  prometheus.Counter
	svidMiss prometheus.Counter
	// rateLimited by rule pattern.
	rateLimited     *prometheus.CounterVec
	rateLimitedRule sync.Map // rule pattern -> prometheus.Counter
	// introspections by outcome, resolved at construction.
	introspections map[string]prometheus.Counter
}

// Outcomes of an introspection besides the OAuth error code of a refused
// request.
const (
	OutcomeActive   = "active"
	OutcomeInactive = "inactive"
)

// NewExchange registers the token endpoint's metrics on reg:
//
//   - spiffe_sts_requests_total{transport,grant_type,outcome}
//   - spiffe_sts_request_duration_seconds{transport,grant_type,outcome}
//   - spiffe_sts_requests_in_flight
//   - spiffe_sts_tokens_issued_total{rule}
//   - spiffe_sts_jwt_svid_cache_requests_total{result="hit"|"miss"}
//   - spiffe_sts_introspections_total{outcome}: RFC 7662 introspections,
//     by outcome active, inactive or the OAuth error code of a refusal
//   - spiffe_sts_rate_limited_total{rule}: token, gRPC and introspection
//     requests refused over their caller's rate limit, by the pattern of
//     the caller's policy rule ("" for callers no rule matches)
//
// It panics if they are already registered (prometheus.MustRegister).
func NewExchange(reg prometheus.Registerer) *Exchange {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "requests_total",
		Help: "Token requests by transport, grant type and outcome (ok or the OAuth error code).",
	}, []string{"transport", "grant_type", "outcome"})
	duration := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: Namespace, Name: "request_duration_seconds",
		Help:    "Time spent on token requests, by transport, grant type and outcome.",
		Buckets: DurationBuckets,
	}, []string{"transport", "grant_type", "outcome"})
	inFlight := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "requests_in_flight",
		Help: "Token requests being served.",
	})
	issued := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "tokens_issued_total",
		Help: "Access tokens issued, by the pattern of the policy rule that allowed them.",
	}, []string{"rule"})
	cache := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "jwt_svid_cache_requests_total",
		Help: "JWT-SVID validations answered from the cache (hit) or by a signature check (miss).",
	}, []string{"result"})
	introspections := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "introspections_total",
		Help: "RFC 7662 introspection requests by outcome (active, inactive or the OAuth error code).",
	}, []string{"outcome"})
	rateLimited := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: Namespace, Name: "rate_limited_total",
		Help: "Requests refused over their caller's rate limit, by the pattern of the caller's policy rule.",
	}, []string{"rule"})
	reg.MustRegister(requests, duration, inFlight, issued, cache, introspections, rateLimited)
	e := &Exchange{
		inFlight:       inFlight,
		children:       map[requestKey]requestChildren{},
		issued:         issued,
		svidHit:        cache.WithLabelValues("hit"),
		svidMiss:       cache.WithLabelValues("miss"),
		introspections: map[string]prometheus.Counter{},
		rateLimited:    rateLimited,
	}
	for _, o := range append([]string{OutcomeActive, OutcomeInactive}, outcomes[1:]...) {
		e.introspections[o] = introspections.WithLabelValues(o)
	}
	for _, t := range []string{TransportHTTP, TransportGRPC} {
		for _, g := range []string{GrantTokenExchange, GrantClientCredentials, GrantOther} {
			for _, o := range outcomes {
				e.children[requestKey{t, g, o}] = requestChildren{
					count:    requests.WithLabelValues(t, g, o),
					duration: duration.WithLabelValues(t, g, o),
				}
			}
		}
	}
	return e
}

// RequestStarted counts a request in flight until RequestDone.
func (e *Exchange) RequestStarted() { e.inFlight.Inc() }

// RequestDone records a finished request, and the token issued when its
// outcome is OutcomeOK.
func (e *Exchange) RequestDone(r Request) {
	e.inFlight.Dec()
	c, ok := e.children[requestKey{r.Transport, grantLabel(r.GrantType), r.Outcome}]
	if !ok {
		c, ok = e.children[requestKey{r.Transport, grantLabel(r.GrantType), "other"}]
		if !ok {
			return // an unknown transport: a bug, not worth a new series
		}
	}
	c.count.Inc()
	c.duration.Observe(r.Duration.Seconds())
	if r.Outcome == OutcomeOK && r.Rule != "" {
		e.ruleCounter(r.Rule).Inc()
	}
}

func (e *Exchange) ruleCounter(rule string) prometheus.Counter {
	return childByRule(&e.byRule, e.issued, rule)
}

// childByRule returns vec's child for rule, resolved once and kept in
// byRule.
func childByRule(byRule *sync.Map, vec *prometheus.CounterVec, rule string) prometheus.Counter {
	if c, ok := byRule.Load(rule); ok {
		return c.(prometheus.Counter)
	}
	c, _ := byRule.LoadOrStore(rule, vec.WithLabelValues(rule))
	return c.(prometheus.Counter)
}

// RateLimited counts a request refused over its caller's rate limit, by
// the pattern of the caller's policy rule ("" when none matches).
func (e *Exchange) RateLimited(rule string) {
	childByRule(&e.rateLimitedRule, e.rateLimited, rule).Inc()
}

// SVIDCacheLookup records a JWT-SVID cache lookup.
func (e *Exchange) SVIDCacheLookup(hit bool) {
	if hit {
		e.svidHit.Inc()
	} else {
		e.svidMiss.Inc()
	}
}

// IntrospectionDone counts an introspection with outcome OutcomeActive,
// OutcomeInactive or the OAuth error code of a refusal ("other" when
// unknown).
func (e *Exchange) IntrospectionDone(outcome string) {
	c, ok := e.introspections[outcome]
	if !ok {
		c = e.introspections["other"]
	}
	c.Inc()
}

// Handler serves the metrics of g in the Prometheus text exposition
// format (or OpenMetrics when asked for).
func Handler(g prometheus.Gatherer) http.Handler {
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{})
}
