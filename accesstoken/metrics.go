package accesstoken

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Outcome label values of spiffe_sts_verifier_verifications_total: a
// closed set, one per error of Verify, and "other" for the rest (a
// verifier without audiences, a cancelled key lookup).
const (
	OutcomeOK            = "ok"
	OutcomeMalformed     = "malformed"
	OutcomeSignature     = "signature"
	OutcomeExpired       = "expired"
	OutcomeNotYetValid   = "not_yet_valid"
	OutcomeIssuer        = "issuer"
	OutcomeAudience      = "audience"
	OutcomeType          = "type"
	OutcomeNotBound      = "not_bound"
	OutcomeNoCertificate = "no_certificate"
	OutcomeUnknownKey    = "unknown_key"
	OutcomeOther         = "other"
)

type outcome int

const (
	outcomeOK outcome = iota
	outcomeMalformed
	outcomeSignature
	outcomeExpired
	outcomeNotYetValid
	outcomeIssuer
	outcomeAudience
	outcomeType
	outcomeNotBound
	outcomeNoCertificate
	outcomeUnknownKey
	outcomeOther
	numOutcomes
)

var outcomeLabels = [numOutcomes]string{
	OutcomeOK, OutcomeMalformed, OutcomeSignature, OutcomeExpired, OutcomeNotYetValid, OutcomeIssuer,
	OutcomeAudience, OutcomeType, OutcomeNotBound, OutcomeNoCertificate, OutcomeUnknownKey, OutcomeOther,
}

// Metrics counts the verifications of the Verifiers it is given to
// (Config.Metrics), for Prometheus:
//
//   - spiffe_sts_verifier_verifications_total{outcome}: calls of Verify by
//     outcome, one of the Outcome constants;
//   - spiffe_sts_verifier_cache_requests_total{result}: cache lookups,
//     result "hit" or "miss".
//
// One Metrics may serve several Verifiers; their counts add up. It keeps
// plain atomic counters and builds the series at each scrape, so a cache
// hit costs one atomic add, and a Verifier without Metrics pays nothing.
type Metrics struct {
	// verified counts the calls answered without the cache, by outcome;
	// they are also the cache misses when the cache is enabled.
	verified [numOutcomes]atomic.Uint64
	misses   atomic.Uint64
	// The cache hits by answer: the outcome of a hit is one of these.
	hitOK, hitExpired, hitNotBound atomic.Uint64

	verifications, cacheRequests *prometheus.Desc
}

// NewMetrics returns Metrics registered on reg, never on the global
// registry. It fails if reg already has these metrics: create one Metrics
// per registry and share it among Verifiers.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	if reg == nil {
		return nil, errors.New("accesstoken: NewMetrics needs a registerer")
	}
	m := &Metrics{
		verifications: prometheus.NewDesc("spiffe_sts_verifier_verifications_total",
			"Access token verifications by outcome.", []string{"outcome"}, nil),
		cacheRequests: prometheus.NewDesc("spiffe_sts_verifier_cache_requests_total",
			"Lookups in the verifier's cache of verified tokens, by result (hit or miss).", []string{"result"}, nil),
	}
	if err := reg.Register(m); err != nil {
		return nil, fmt.Errorf("accesstoken: metrics: %w", err)
	}
	return m, nil
}

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.verifications
	ch <- m.cacheRequests
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	hitOK, hitExpired, hitNotBound := m.hitOK.Load(), m.hitExpired.Load(), m.hitNotBound.Load()
	for o := range numOutcomes {
		n := m.verified[o].Load()
		switch o {
		case outcomeOK:
			n += hitOK
		case outcomeExpired:
			n += hitExpired
		case outcomeNotBound:
			n += hitNotBound
		}
		ch <- prometheus.MustNewConstMetric(m.verifications, prometheus.CounterValue, float64(n), outcomeLabels[o])
	}
	ch <- prometheus.MustNewConstMetric(m.cacheRequests, prometheus.CounterValue, float64(hitOK+hitExpired+hitNotBound), "hit")
	ch <- prometheus.MustNewConstMetric(m.cacheRequests, prometheus.CounterValue, float64(m.misses.Load()), "miss")
}

// hit counts a cache hit answered with err.
func (m *Metrics) hit(err error) {
	switch {
	case err == nil:
		m.hitOK.Add(1)
	case errors.Is(err, ErrNotBound):
		m.hitNotBound.Add(1)
	default: // the only other answer of a hit is *ExpiredError
		m.hitExpired.Add(1)
	}
}

// verify counts a Verify answered without the cache; miss reports that
// the cache was looked up first.
func (m *Metrics) verify(err error, miss bool) {
	if miss {
		m.misses.Add(1)
	}
	m.verified[outcomeOf(err)].Add(1)
}

// outcomeOf classifies an error of Verify.
func outcomeOf(err error) outcome {
	var expired *ExpiredError
	switch {
	case err == nil:
		return outcomeOK
	case errors.Is(err, ErrUnknownKey): // wrapped in ErrSignature: test first
		return outcomeUnknownKey
	case errors.Is(err, ErrSignature):
		return outcomeSignature
	case errors.Is(err, ErrMalformed):
		return outcomeMalformed
	case errors.As(err, &expired):
		return outcomeExpired
	case errors.Is(err, ErrNotYetValid):
		return outcomeNotYetValid
	case errors.Is(err, ErrIssuer):
		return outcomeIssuer
	case errors.Is(err, ErrAudience):
		return outcomeAudience
	case errors.Is(err, ErrType):
		return outcomeType
	case errors.Is(err, ErrNotBound):
		return outcomeNotBound
	case errors.Is(err, ErrNoCertificate):
		return outcomeNoCertificate
	}
	return outcomeOther
}
