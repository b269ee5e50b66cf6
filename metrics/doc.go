// Package metrics holds the Prometheus metrics of the spiffe-sts server:
// the token endpoint's requests (Exchange, an exchange.Recorder) and the
// state of its trust material and keys (State, read at each scrape).
//
// Every metric is registered on the prometheus.Registerer it is given,
// never on the global one; names carry the spiffe_sts_ prefix and base
// units (seconds), counters end in _total, and every label has a bounded
// set of values: transport, grant type and outcome are closed sets, the
// rule label is a policy rule's pattern (bounded by the configuration),
// trust domains are the configured ones, and key IDs those of the small
// key ring. A SPIFFE ID, jti or other per-caller value is never a label.
//
//	reg := prometheus.NewRegistry()
//	rec := metrics.NewExchange(reg)
//	sts, err := exchange.New(exchange.Config{..., Metrics: rec})
//	metrics.RegisterState(reg, metrics.State{SVIDExpiry: ...})
//	http.Handle("/metrics", metrics.Handler(reg))
package metrics
