package exchangeclient

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
)

// Label values of the client's metrics.
const (
	// Outcomes besides the OAuth error code of a refusal (RFC 6749 §5.2).
	OutcomeOK             = "ok"
	OutcomeTransportError = "transport_error"
	// OutcomeOtherError counts a refusal whose code is none of RFC 6749
	// §5.2 and RFC 8693 §2.2.2, so that a server cannot grow the label set.
	OutcomeOtherError = "other_error"

	GrantTokenExchange     = "token_exchange"
	GrantClientCredentials = "client_credentials"
)

// outcomes is the closed set of outcome label values.
var outcomes = []string{
	OutcomeOK, OutcomeTransportError, OutcomeOtherError,
	protocol.ErrInvalidRequest.Code, protocol.ErrInvalidClient.Code, protocol.ErrInvalidGrant.Code,
	protocol.ErrUnauthorizedClient.Code, protocol.ErrUnsupportedGrantType.Code, protocol.ErrInvalidScope.Code,
	protocol.ErrInvalidTarget.Code, protocol.ErrServerError.Code, protocol.ErrTemporarilyUnavailable.Code,
}

type exchangeKey struct{ grant, outcome string }

// clientMetrics holds the counters of WithMetrics, their children resolved
// at construction. A nil *clientMetrics counts nothing.
type clientMetrics struct {
	collectors      []prometheus.Collector
	exchanges       map[exchangeKey]prometheus.Counter
	refreshFailures prometheus.Counter
	rebinds         map[string]prometheus.Counter
}

// newClientMetrics registers the client's counters on reg.
func newClientMetrics(reg prometheus.Registerer) (*clientMetrics, error) {
	exchanges := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "spiffe_sts_client_exchanges_total",
		Help: "Token requests sent by the client, by grant and outcome (ok, the OAuth error code, or transport_error).",
	}, []string{"grant", "outcome"})
	refreshFailures := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "spiffe_sts_client_refresh_failures_total",
		Help: "Token requests of Tokens (obtaining, refreshing or re-binding a certificate's token) that ended without a token.",
	})
	rebinds := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "spiffe_sts_client_rebinds_total",
		Help: "Re-bindings of a token to a rotated X509-SVID, by outcome (ok, the OAuth error code, or transport_error).",
	}, []string{"outcome"})
	m := &clientMetrics{
		collectors:      []prometheus.Collector{exchanges, refreshFailures, rebinds},
		exchanges:       map[exchangeKey]prometheus.Counter{},
		refreshFailures: refreshFailures,
		rebinds:         map[string]prometheus.Counter{},
	}
	for _, o := range outcomes {
		for _, g := range []string{GrantTokenExchange, GrantClientCredentials} {
			m.exchanges[exchangeKey{g, o}] = exchanges.WithLabelValues(g, o)
		}
		m.rebinds[o] = rebinds.WithLabelValues(o)
	}
	for i, c := range m.collectors {
		if err := reg.Register(c); err != nil {
			for _, done := range m.collectors[:i] {
				reg.Unregister(done)
			}
			return nil, fmt.Errorf("exchangeclient: metrics: %w", err)
		}
	}
	return m, nil
}

// outcomeOf is the outcome label of a token request's result.
func outcomeOf(err error) string {
	if err == nil {
		return OutcomeOK
	}
	var perr protocol.Error
	if !errors.As(err, &perr) {
		return OutcomeTransportError
	}
	for _, o := range outcomes[3:] {
		if perr.Code == o {
			return o
		}
	}
	return OutcomeOtherError
}

// exchange counts a token request of grant answered with err.
func (m *clientMetrics) exchange(grant protocol.GrantType, err error) {
	if m == nil {
		return
	}
	g := GrantTokenExchange
	if grant == protocol.GrantTypeClientCredentials {
		g = GrantClientCredentials
	}
	m.exchanges[exchangeKey{g, outcomeOf(err)}].Inc()
}

// rebind counts a re-binding answered with err.
func (m *clientMetrics) rebind(err error) {
	if m != nil {
		m.rebinds[outcomeOf(err)].Inc()
	}
}

// refreshFailed counts a request of Tokens that ended without a token.
func (m *clientMetrics) refreshFailed() {
	if m != nil {
		m.refreshFailures.Inc()
	}
}

// unregister removes the counters from reg, when New fails after
// registering them.
func (m *clientMetrics) unregister(reg prometheus.Registerer) {
	if m != nil {
		for _, c := range m.collectors {
			reg.Unregister(c)
		}
	}
}
