// Package metricstest checks Prometheus metrics in tests: it runs
// `promtool check metrics` (Debian's prometheus package) on what a
// registry exposes, so every package that defines metrics can hold its
// names and help texts to the Prometheus conventions.
//
//	reg := prometheus.NewRegistry()
//	m, _ := accesstoken.NewMetrics(reg)
//	metricstest.Check(t, reg)
package metricstest
