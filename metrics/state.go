package metrics

import (
	"math"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Key is a signing key of the ring as a metric shows it.
type Key struct {
	// ID is the kid; State is "next", "active", "retired" or "revoked".
	ID, State string
}

// Bundle is the confirmation state of one trust domain's bundle.
type Bundle struct {
	TrustDomain string
	// Age is the time since the Workload API last confirmed the bundle;
	// Confirmed is false when it never did.
	Age       time.Duration
	Confirmed bool
}

// State reads the server's state at each scrape; a nil function leaves
// its metrics out.
type State struct {
	// Keys are the key ring's keys (spiffe_sts_keyring_key_info).
	Keys func() []Key
	// NextRotation is the time until the next key activates, negative when
	// a rotation is overdue (spiffe_sts_keyring_next_rotation_seconds).
	NextRotation func() (time.Duration, bool)
	// StoreReachable is the key store's status
	// (spiffe_sts_keyring_store_reachable, issue 8).
	StoreReachable func() bool
	// SVIDExpiry is the NotAfter of the server's own X509-SVID
	// (spiffe_sts_svid_expiry_timestamp_seconds).
	SVIDExpiry func() (time.Time, bool)
	// Bundles are the accepted trust domains
	// (spiffe_sts_bundle_confirmation_age_seconds).
	Bundles func() []Bundle
	// WorkloadAPIConnected reports the Workload API stream
	// (spiffe_sts_workload_api_connected).
	WorkloadAPIConnected func() bool
	// SVIDRenewalOverdue reports that the own X509-SVID is past the time
	// its SPIRE agent should have renewed it, so that Workload API answers
	// no longer confirm bundles (spiffe_sts_svid_renewal_overdue).
	SVIDRenewalOverdue func() bool
}

var (
	descKey = prometheus.NewDesc(Namespace+"_keyring_key_info",
		"A signing key of the ring, by kid and state (always 1).", []string{"kid", "state"}, nil)
	descNextRotation = prometheus.NewDesc(Namespace+"_keyring_next_rotation_seconds",
		"Seconds until the next signing key activates; negative when the rotation is overdue.", nil, nil)
	descStore = prometheus.NewDesc(Namespace+"_keyring_store_reachable",
		"1 when the key ring's store answered the last refresh, else 0.", nil, nil)
	descSVIDExpiry = prometheus.NewDesc(Namespace+"_svid_expiry_timestamp_seconds",
		"Expiry (NotAfter) of the server's own X509-SVID, in Unix seconds.", nil, nil)
	descBundleAge = prometheus.NewDesc(Namespace+"_bundle_confirmation_age_seconds",
		"Seconds since the Workload API last confirmed the trust domain's bundle (+Inf when it never did).", []string{"trust_domain"}, nil)
	descConnected = prometheus.NewDesc(Namespace+"_workload_api_connected",
		"1 while the Workload API stream is connected, else 0.", nil, nil)
	descRenewalOverdue = prometheus.NewDesc(Namespace+"_svid_renewal_overdue",
		"1 while the server's own X509-SVID is overdue for renewal by its SPIRE agent (Workload API answers then confirm no bundle), else 0.", nil, nil)
)

// RegisterState registers a collector that reads s at each scrape.
func RegisterState(reg prometheus.Registerer, s State) error {
	return reg.Register(stateCollector{s})
}

type stateCollector struct{ s State }

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descKey, descNextRotation, descStore, descSVIDExpiry, descBundleAge, descConnected, descRenewalOverdue} {
		ch <- d
	}
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	if s.Keys != nil {
		for _, k := range s.Keys() {
			ch <- prometheus.MustNewConstMetric(descKey, prometheus.GaugeValue, 1, k.ID, k.State)
		}
	}
	if s.NextRotation != nil {
		if d, ok := s.NextRotation(); ok {
			ch <- prometheus.MustNewConstMetric(descNextRotation, prometheus.GaugeValue, d.Seconds())
		}
	}
	if s.StoreReachable != nil {
		ch <- prometheus.MustNewConstMetric(descStore, prometheus.GaugeValue, boolValue(s.StoreReachable()))
	}
	if s.SVIDExpiry != nil {
		if t, ok := s.SVIDExpiry(); ok {
			ch <- prometheus.MustNewConstMetric(descSVIDExpiry, prometheus.GaugeValue, float64(t.Unix()))
		}
	}
	if s.Bundles != nil {
		for _, b := range s.Bundles() {
			age := b.Age.Seconds()
			if !b.Confirmed {
				age = posInf
			}
			ch <- prometheus.MustNewConstMetric(descBundleAge, prometheus.GaugeValue, age, b.TrustDomain)
		}
	}
	if s.WorkloadAPIConnected != nil {
		ch <- prometheus.MustNewConstMetric(descConnected, prometheus.GaugeValue, boolValue(s.WorkloadAPIConnected()))
	}
	if s.SVIDRenewalOverdue != nil {
		ch <- prometheus.MustNewConstMetric(descRenewalOverdue, prometheus.GaugeValue, boolValue(s.SVIDRenewalOverdue()))
	}
}

var posInf = math.Inf(1)

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
