// Package spiffeid is spiffe-sts's SPIFFE ID policy layer on top of go-spiffe.
// It answers two questions: who is the mTLS peer, and may that ID do this?
//
// It works with go-spiffe's types directly (spiffeid.ID, spiffeid.Matcher,
// x509svid, x509bundle). Other packages import it as stsid:
//
//	import stsid "github.com/spiffe-sts/spiffe-sts/spiffeid"
//
// # Who is the peer
//
// A [Peer] is the SPIFFE ID of the client's X509-SVID (SPIFFE X509-SVID
// §2, the single URI SAN) together with the leaf certificate, which the token
// issuer binds tokens to (RFC 8705 §3.1). When the TLS layer has verified
// the chain, read it with [PeerFromTLS] (net/http) or [PeerFromContext]
// (gRPC). When the server only requests client certificates, verify them
// against the trust bundles with [VerifyPeer] (RFC 8705 §2.1.2):
//
//	peer, err := stsid.VerifyPeer(r.TLS.PeerCertificates, bundles)
//	if err != nil {
//		// invalid_client
//	}
//	ctx := stsid.WithPeer(r.Context(), peer)
//
// # What may it do
//
// A [Pattern] matches SPIFFE IDs (SPIFFE-ID.md §2): an exact ID, a whole
// trust domain ("spiffe://example.org"), or an ID with "*" path segments
// ("spiffe://example.org/ns/*/sa/web"). A [Policy] is an ordered list of
// [Rule]s; the first rule whose pattern matches the caller applies, and
// callers no rule matches are denied:
//
//	policy, err := stsid.NewPolicy([]stsid.Rule{{
//		Pattern:   stsid.RequirePattern("spiffe://example.org/ns/*/sa/web"),
//		Audiences: []string{"https://api.example.org"},
//		Scopes:    []string{"read", "write"},
//		MaxTTL:    5 * time.Minute,
//	}})
//	...
//	rule, ok := policy.RuleFor(peer.ID)
//	if !ok || !rule.AllowsAudience(audience) {
//		// invalid_target
//	}
//	scopes := rule.GrantScopes(requested)
//
// Patterns also authorize TLS peers through go-spiffe:
//
//	tlsconfig.AdaptMatcher(pattern.Matcher())
package spiffeid
