package exchange

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v3/jws/jwsbb"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/audit"
	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
	"github.com/spiffe-sts/spiffe-sts/metrics"
	stsid "github.com/spiffe-sts/spiffe-sts/spiffeid"
)

// Recorder receives the token endpoint's measurements; *metrics.Exchange
// implements it. Calls must be cheap: they are on every request's path.
type Recorder interface {
	// RequestStarted counts a request in flight until RequestDone.
	RequestStarted()
	// RequestDone records a finished request.
	RequestDone(metrics.Request)
	// SVIDCacheLookup records a JWT-SVID cache lookup.
	SVIDCacheLookup(hit bool)
	// IntrospectionDone records an introspection by outcome
	// (metrics.OutcomeActive, metrics.OutcomeInactive or the OAuth error
	// code).
	IntrospectionDone(outcome string)
	// RateLimited counts a request refused over its caller's rate limit,
	// by the pattern of the caller's policy rule ("" when none applies).
	RateLimited(rule string)
}

// AuditSink receives one record per token decision; *audit.Log
// implements it.
type AuditSink interface {
	Write(*audit.Record) error
}

// BundleConfirmations tells when the Workload API last confirmed each
// trust domain's bundle (see Config.Bundles).
type BundleConfirmations interface {
	// BundleConfirmed returns the time of the last confirmation of td's
	// bundle; false when there was none.
	BundleConfirmed(td spiffeid.TrustDomain) (time.Time, bool)
}

// HeaderRequestID is the response header, and lower-cased the gRPC
// trailer, that carries the request id of the audit record.
const HeaderRequestID = "X-Request-Id"

// trailerRequestID and trailerRetryAfter are the gRPC trailer keys.
const (
	trailerRequestID  = "x-request-id"
	trailerRetryAfter = "retry-after"
)

// decision gathers what a token request established, for its audit
// record and metrics; the pipeline fills it in as it goes.
type decision struct {
	start     time.Time // monotonic, for the duration
	id        string
	transport string
	remote    string
	caller    stsid.Peer
	proxy     stsid.Peer // the trusted proxy that forwarded caller's certificate
	req       *Request
	subj      *subject
	rule      *stsid.Rule
	claims    *accesstoken.Claims
	issued    protocol.TokenType
	raw       string // the issued token, read for its kid only; never recorded

	// chargedPolicy and chargedRule are the policy the rate limit was
	// charged under and its rule for the caller (nil when none), which
	// the exchange reuses while the policy is unchanged.
	chargedPolicy *stsid.Policy
	chargedRule   *stsid.Rule
	// The storage req, subj, claims and the response point to over HTTP
	// (and subj, claims and the response over gRPC), so that they are not
	// allocations of their own.
	reqStore    Request
	subjStore   subject
	claimsStore accesstoken.Claims
	respStore   protocol.Response
}

// begin starts the decision of a request on transport.
func (s *Server) begin(transport string) decision {
	if s.cfg.Metrics != nil {
		s.cfg.Metrics.RequestStarted()
	}
	return decision{start: time.Now(), id: newRequestID(), transport: transport}
}

// newRequestID returns 96 random bits, hex.
func newRequestID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// refusal is a protocol error with server-side detail for the audit
// record (a library's error text, never a token) and, for the refusals
// of a limit, the metrics outcome that tells them from other
// temporarily_unavailable answers.
type refusal struct {
	err     protocol.Error
	detail  string
	outcome string // the error code when empty
}

func (r refusal) Error() string { return r.err.Error() }
func (r refusal) Unwrap() error { return r.err }

// withDetail returns e carrying detail for the audit trail only.
func withDetail(e protocol.Error, detail string) error {
	return refusal{err: e, detail: detail}
}

// finish records the decision (audit record, then metrics) and returns
// what to send: resp, or the refusal as a protocol.Error. When the audit
// record cannot be written and Config.AuditRequired is set, the request
// is refused with temporarily_unavailable instead: never served
// unaudited.
func (s *Server) finish(d *decision, resp *protocol.Response, err error) (*protocol.Response, error) {
	var perr protocol.Error
	outcome := metrics.OutcomeOK
	if err != nil {
		perr, resp = s.protocolError(err), nil
		outcome = refusalOutcome(err, perr)
	}
	if s.cfg.Audit != nil {
		if werr := s.cfg.Audit.Write(s.auditRecord(d, perr, err)); werr != nil {
			s.log.Error("audit record not written", logKeyRequestID, d.id, logKeyError, werr.Error())
			if s.cfg.AuditRequired {
				perr = protocol.ErrTemporarilyUnavailable.WithDescription("the audit trail is unavailable; retry later")
				resp, err, outcome = nil, perr, perr.Code
			}
		}
	}
	if s.cfg.Metrics != nil {
		r := metrics.Request{Transport: d.transport, Outcome: outcome, Duration: time.Since(d.start)}
		if d.req != nil {
			r.GrantType = string(d.req.GrantType)
		}
		if err == nil && d.rule != nil {
			r.Rule = d.rule.Pattern.String()
		}
		s.cfg.Metrics.RequestDone(r)
	}
	if err != nil {
		return nil, perr
	}
	return resp, nil
}

// auditRecord is the audit record of d; perr is the refusal (zero when
// the token was issued) and err the error it came from.
func (s *Server) auditRecord(d *decision, perr protocol.Error, err error) *audit.Record {
	rec := &audit.Record{
		Time:       s.cfg.Clock().UTC(),
		RequestID:  d.id,
		Transport:  d.transport,
		Outcome:    audit.OutcomeIssued,
		RemoteAddr: d.remote,
	}
	if err != nil {
		rec.Outcome, rec.Error, rec.Reason = audit.OutcomeRefused, perr.Code, perr.Description
		rec.Detail = refusalDetail(err)
	}
	if d.caller.Leaf != nil {
		rec.Caller = d.caller.ID.String()
		if d.claims != nil && err == nil {
			rec.X5TS256 = d.claims.Confirmation.X5TS256 // the same, computed by the Minter
		} else {
			rec.X5TS256 = accesstoken.Thumbprint(d.caller.Leaf)
		}
	}
	if !d.proxy.ID.IsZero() {
		rec.ProxySPIFFEID = d.proxy.ID.String()
	}
	if req := d.req; req != nil {
		rec.GrantType = string(req.GrantType)
		rec.SubjectTokenType = string(req.SubjectTokenType)
		rec.ActorTokenType = string(req.ActorTokenType)
		rec.RequestedTokenType = string(req.RequestedTokenType)
		rec.RequestedScope = req.Scope
		rec.Impersonate = req.Impersonate
		switch {
		case len(req.Resource) == 0:
			rec.RequestedAudience = req.Audience // never modified once parsed
		default:
			rec.RequestedAudience = slices.Concat(req.Audience, req.Resource)
		}
	}
	if d.subj != nil {
		rec.Subject = d.subj.name()
	}
	if d.rule != nil {
		rec.Rule = d.rule.Pattern.String()
	}
	if c := d.claims; c != nil && err == nil {
		rec.IssuedTokenType = string(d.issued)
		rec.Subject = c.Subject
		rec.Audience = c.Audience
		rec.Scope = c.Scope
		rec.Act = c.ActorChain()
		rec.JTI = c.JWTID
		rec.ExpiresAt = c.Expiry
		rec.KID = s.issuedKeyID(d.raw)
	}
	return rec
}

// refusalOutcome is the metrics outcome of err, refused as perr: the
// refusal's own outcome, or perr's code.
func refusalOutcome(err error, perr protocol.Error) string {
	if r, ok := errors.AsType[refusal](err); ok && r.outcome != "" {
		return r.outcome
	}
	return perr.Code
}

// refusalDetail is the server-side detail of a refusal for its audit
// record: a refusal's detail, or the text of an error that became a
// server_error; "" for a plain protocol.Error.
func refusalDetail(err error) string {
	if r, ok := errors.AsType[refusal](err); ok {
		return r.detail
	}
	if !errors.As(err, new(protocol.Error)) {
		return err.Error() // the server_error behind the fixed text
	}
	return ""
}

// issuedKeyID returns the "kid" of the protected header of raw, a token
// this server has just minted (trusted input, nothing to verify), read with
// jwx's jwsbb, which decodes the header alone, where a full jws.Parse
// costs some 70 allocations (about 14µs, an eighth of a request). Every
// token signed by one key has the same header, so the last one is
// remembered, and compared with raw's header in place.
func (s *Server) issuedKeyID(raw string) string {
	protected, _, _ := strings.Cut(raw, ".")
	if strings.Count(raw, ".") != 2 {
		return ""
	}
	if last := s.lastKID.Load(); last != nil && last.header == protected {
		return last.kid
	}
	kid := headerKeyID([]byte(protected))
	if kid == "" {
		return ""
	}
	s.lastKID.Store(&headerKID{header: strings.Clone(protected), kid: kid})
	return kid
}

// maxAuditedKeyIDLen bounds the kid taken from a presented token's
// header, which anyone can write, for the audit record.
const maxAuditedKeyIDLen = 128

// presentedKeyID returns the "kid" of the protected header of raw, a
// token someone presented, unverified: it says which key the token
// claims, not that the key signed it. "" when the header does not parse
// or the kid is longer than maxAuditedKeyIDLen.
func presentedKeyID(raw string) string {
	protected, _, _, err := jwsbb.SplitCompactString(raw)
	if err != nil {
		return ""
	}
	if kid := headerKeyID(protected); len(kid) <= maxAuditedKeyIDLen {
		return kid
	}
	return ""
}

// headerKeyID returns the "kid" of an encoded protected header; "" when
// there is none.
func headerKeyID(protected []byte) string {
	kid, err := jwsbb.HeaderGetString(jwsbb.HeaderParseCompact(protected), "kid")
	if err != nil {
		return ""
	}
	return kid
}

// headerKID is a protected header and its kid.
type headerKID struct{ header, kid string }

// checkFresh refuses, with temporarily_unavailable, a caller or subject
// token of trust domain td once td's bundle was last confirmed by the
// Workload API longer than Config.BundleHardLimit ago, or never: it may
// have lost an authority since (fail closed).
func (s *Server) checkFresh(td spiffeid.TrustDomain) error {
	if s.cfg.Bundles == nil {
		return nil
	}
	at, ok := s.cfg.Bundles.BundleConfirmed(td)
	if ok && s.cfg.Clock().Sub(at) <= s.cfg.BundleHardLimit {
		return nil
	}
	detail := "never confirmed by the Workload API"
	if ok {
		detail = fmt.Sprintf("last confirmed by the Workload API at %s, over bundle_hard_limit %s ago", at.UTC().Format(time.RFC3339), s.cfg.BundleHardLimit)
	}
	s.log.Warn("refusing a caller of a trust domain whose bundle is stale", logKeyTrustDomain, td.Name(), logKeyReason, detail)
	return withDetail(protocol.ErrTemporarilyUnavailable.WithDescription("the trust bundle of trust domain %q is stale; retry later", td.Name()), detail)
}

// bundleAge checks the readiness condition of td's bundle.
func (s *Server) bundleAge(td spiffeid.TrustDomain) error {
	at, ok := s.cfg.Bundles.BundleConfirmed(td)
	switch {
	case !ok:
		return fmt.Errorf("bundle of trust domain %q: never confirmed by the Workload API", td.Name())
	case s.cfg.Clock().Sub(at) > s.cfg.MaxBundleAge:
		return fmt.Errorf("bundle of trust domain %q: last confirmed by the Workload API %s ago, over max_bundle_age %s", td.Name(), s.cfg.Clock().Sub(at).Truncate(time.Second), s.cfg.MaxBundleAge)
	}
	return nil
}

// The transport label values, as metrics names them.
const (
	metricsTransportHTTP = metrics.TransportHTTP
	metricsTransportGRPC = metrics.TransportGRPC
)
