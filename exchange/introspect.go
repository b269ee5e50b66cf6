package exchange

import (
	"bytes"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/audit"
	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
	stsid "github.com/spiffe-sts/spiffe-sts/spiffeid"
)

// introspection is the RFC 7662 §2.2 introspection response. An inactive
// token is {"active":false} and nothing else.
type introspection struct {
	Active    bool                      `json:"active"`
	Scope     string                    `json:"scope,omitempty"`
	ClientID  string                    `json:"client_id,omitempty"`
	TokenType string                    `json:"token_type,omitempty"`
	Expiry    int64                     `json:"exp,omitempty"`
	IssuedAt  int64                     `json:"iat,omitempty"`
	NotBefore int64                     `json:"nbf,omitempty"`
	Subject   string                    `json:"sub,omitempty"`
	Audience  accesstoken.Audience      `json:"aud,omitempty"`
	Issuer    string                    `json:"iss,omitempty"`
	JWTID     string                    `json:"jti,omitempty"`
	SubjectID *accesstoken.SubjectID    `json:"sub_id,omitempty"`
	Cnf       *accesstoken.Confirmation `json:"cnf,omitempty"`
	Actor     *accesstoken.Actor        `json:"act,omitempty"`
}

// inactive is the response for every token the caller may not learn
// about: expired, withdrawn (its key no longer in the key set), foreign,
// malformed or not meant for the caller. RFC 7662 §2.2 and §4: no detail.
var inactive = introspection{}

// serveIntrospect is the RFC 7662 token introspection endpoint, for
// resource servers that check the certificate binding themselves (RFC
// 8705 §3.2). The caller authenticates with its X509-SVID as on /token
// (tls_client_auth, behind Config.Forwarded's trusted proxies too) and
// may learn only about tokens whose "aud" holds its own SPIFFE ID or one
// of its policy rule's IntrospectAudiences. The token is verified as the
// server verifies its own tokens for exchange: signature by a current
// key, iss, exp, nbf, but not the binding, which is the resource
// server's to check against its own client's certificate.
// token_type_hint is ignored (RFC 7662 §2.1 lets the server do so).
func (s *Server) serveIntrospect(w http.ResponseWriter, r *http.Request) {
	rec := &audit.Record{
		RequestID:  newRequestID(),
		Transport:  metricsTransportHTTP,
		Operation:  audit.OperationIntrospect,
		RemoteAddr: r.RemoteAddr,
	}
	w.Header()[HeaderRequestID] = []string{rec.RequestID}
	caller, proxy, err := s.authenticate(connAuthFrom(r.Context()), r.TLS, r.Header)
	if err != nil {
		s.introspected(w, rec, nil, err)
		return
	}
	rec.Caller, rec.X5TS256 = caller.ID.String(), accesstoken.Thumbprint(caller.Leaf)
	if !proxy.ID.IsZero() {
		rec.ProxySPIFFEID = proxy.ID.String()
	}
	if rule, err := s.charge(caller); err != nil {
		if rule != nil {
			rec.Rule = rule.Pattern.String()
		}
		s.introspected(w, rec, nil, err)
		return
	}
	token, err := s.introspectionToken(r)
	if err != nil {
		s.introspected(w, rec, nil, err)
		return
	}
	// As on /token: charged before the body, admitted after it.
	if !s.admit() {
		s.introspected(w, rec, nil, errOverloaded)
		return
	}
	defer s.release()
	resp, claims, reason := s.introspect(r, caller, token)
	rec.KID = presentedKeyID(token)
	if claims != nil {
		rec.JTI = claims.JWTID
	}
	rec.Detail = reason
	s.introspected(w, rec, &resp, nil)
}

// introspected records an introspection (audit record, metrics, log
// line) and answers it: with resp, or the refusal err. When the audit
// record cannot be written and Config.AuditRequired is set, the answer
// is temporarily_unavailable instead: nothing is revealed unaudited.
func (s *Server) introspected(w http.ResponseWriter, rec *audit.Record, resp *introspection, err error) {
	rec.Time = s.cfg.Clock().UTC()
	var perr protocol.Error
	switch {
	case err != nil:
		perr = s.protocolError(err)
		rec.Outcome, rec.Error, rec.Reason, rec.Detail = audit.OutcomeRefused, perr.Code, perr.Description, refusalDetail(err)
	case resp.Active:
		rec.Outcome = audit.OutcomeActive
	default:
		rec.Outcome = audit.OutcomeInactive
	}
	if s.cfg.Audit != nil {
		if werr := s.cfg.Audit.Write(rec); werr != nil {
			s.log.Error("audit record not written", logKeyRequestID, rec.RequestID, logKeyError, werr.Error())
			if s.cfg.AuditRequired {
				perr = protocol.ErrTemporarilyUnavailable.WithDescription("the audit trail is unavailable; retry later")
				err, resp = perr, nil
			}
		}
	}
	outcome := rec.Outcome
	if err != nil {
		outcome = refusalOutcome(err, perr)
	}
	if s.cfg.Metrics != nil {
		s.cfg.Metrics.IntrospectionDone(outcome)
	}
	args := []any{logKeyRequestID, rec.RequestID, logKeySPIFFEID, rec.Caller, logKeyOutcome, outcome}
	if rec.ProxySPIFFEID != "" {
		args = append(args, logKeyProxy, rec.ProxySPIFFEID)
	}
	if rec.JTI != "" {
		args = append(args, logKeyJTI, rec.JTI)
	}
	if rec.Detail != "" {
		args = append(args, logKeyReason, rec.Detail)
	}
	s.log.Info("token introspection", args...)
	if err != nil {
		writeError(w, perr)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// introspectionToken reads the token parameter of the form body (RFC
// 7662 §2.1): required, once.
func (s *Server) introspectionToken(r *http.Request) (string, error) {
	mediaType, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mediaType != "application/x-www-form-urlencoded" {
		return "", protocol.ErrInvalidRequest.WithDescription("content type must be application/x-www-form-urlencoded")
	}
	// One authentication method per request (RFC 6749 §2.3), as on /token.
	if r.Header.Get("Authorization") != "" {
		return "", protocol.ErrInvalidRequest.WithDescription("authenticate with the X509-SVID (tls_client_auth) only")
	}
	var buf bytes.Buffer
	n, err := buf.ReadFrom(io.LimitReader(r.Body, s.cfg.MaxBodyBytes+1))
	switch {
	case err != nil:
		return "", protocol.ErrInvalidRequest.WithDescription("reading the request body failed")
	case n > s.cfg.MaxBodyBytes:
		return "", protocol.ErrInvalidRequest.WithDescription("request body exceeds %d bytes", s.cfg.MaxBodyBytes)
	}
	return parseIntrospectionForm(buf.String())
}

// parseIntrospectionForm returns the token parameter of an introspection
// request body (RFC 7662 §2.1): required, once, not empty.
func parseIntrospectionForm(body string) (string, error) {
	form, err := url.ParseQuery(body)
	if err != nil {
		return "", protocol.ErrInvalidRequest.WithDescription("the request body is not a valid form")
	}
	switch tokens := form["token"]; {
	case len(tokens) > 1:
		return "", protocol.ErrInvalidRequest.WithDescription("token must be sent once")
	case len(tokens) == 0 || tokens[0] == "":
		return "", protocol.ErrInvalidRequest.WithDescription("token is required")
	default:
		return tokens[0], nil
	}
}

// introspect returns the response for token, its claims when it
// verified, and, when inactive, why (for the audit trail and the log
// only).
func (s *Server) introspect(r *http.Request, caller stsid.Peer, token string) (introspection, *accesstoken.Claims, string) {
	claims, err := s.verifyOwnToken(r.Context(), token)
	if err != nil {
		var expired *accesstoken.ExpiredError
		switch {
		case errors.As(err, &expired):
			return inactive, nil, "expired"
		case errors.Is(err, accesstoken.ErrNotYetValid):
			return inactive, nil, "not yet valid"
		}
		return inactive, nil, err.Error() // accesstoken's text: never a token
	}
	if !s.mayIntrospect(caller, claims.Audience) {
		return inactive, claims, "the token's audience is neither the caller nor one of its introspect_audiences"
	}
	resp := introspection{
		Active:    true,
		Scope:     claims.Scope,
		ClientID:  claims.ClientID,
		TokenType: "Bearer",
		Expiry:    claims.Expiry,
		IssuedAt:  claims.IssuedAt,
		NotBefore: claims.NotBefore,
		Subject:   claims.Subject,
		Audience:  claims.Audience,
		Issuer:    claims.Issuer,
		JWTID:     claims.JWTID,
		SubjectID: claims.SubjectID,
		Actor:     claims.Actor,
	}
	if claims.Confirmation.X5TS256 != "" {
		cnf := claims.Confirmation
		resp.Cnf = &cnf
	}
	return resp, claims, ""
}

// mayIntrospect reports whether caller may learn about a token for
// audience: it names the caller's SPIFFE ID, or an audience the caller's
// policy rule lists in IntrospectAudiences.
func (s *Server) mayIntrospect(caller stsid.Peer, audience accesstoken.Audience) bool {
	if slices.Contains(audience, caller.ID.String()) {
		return true
	}
	rule, ok := s.policy.Load().RuleFor(caller.ID)
	return ok && slices.ContainsFunc(audience, rule.MayIntrospect)
}

func serveIntrospectMethodNotAllowed(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Allow", http.MethodPost)
	writeJSON(w, http.StatusMethodNotAllowed, protocol.ErrInvalidRequest.WithDescription("the introspection endpoint accepts POST only"))
}
