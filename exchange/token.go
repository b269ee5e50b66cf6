package exchange

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
	"github.com/spiffe-sts/spiffe-sts/internal/jwtcheck"
	stsid "github.com/spiffe-sts/spiffe-sts/spiffeid"
)

// subject is what a grant establishes about the token's subject before the
// shared steps run.
type subject struct {
	// id is the subject when it is a SPIFFE ID.
	id spiffeid.ID
	// external qualifies a subject of an external issuer (an end user, for
	// example), which issuerName names in policy.
	external   *accesstoken.SubjectID
	issuerName string
	// selfAsserted is set for the caller's own credentials (its JWT-SVID,
	// or client_credentials): no token of someone else is involved.
	selfAsserted bool
	// fromExternalIssuer is set for a token of an external issuer itself:
	// its audience names this server or the application, not the caller,
	// so policy alone decides who may present it.
	fromExternalIssuer bool
	// issuedTo is the client an access token of ours was issued to.
	issuedTo string
	// sentTo are the subject token's audiences: who it was sent to.
	sentTo []string
	// audience is kept on re-bind when the request names none.
	audience []string
	// scoped is set when the subject token carries a scope ceiling; scopes
	// is then that ceiling (an exchange never widens a grant).
	scoped bool
	scopes []string
	// expiry caps the issued token's lifetime; zero when uncapped.
	expiry time.Time
	// actor is the subject token's act chain; mayAct its may_act claim.
	actor, mayAct *accesstoken.Actor
	// jti identifies the subject token in security logs.
	jti string
}

// name is the subject as it goes into "sub".
func (s *subject) name() string {
	if s.external != nil {
		return s.external.Subject
	}
	return s.id.String()
}

// subjectVerifier validates one subject_token_type (RFC 8693 §2.1). It
// only establishes the subject: the dispatcher runs every shared step.
type subjectVerifier interface {
	verifySubject(ctx context.Context, token string) (subject, error)
}

// serveToken is the token endpoint. Every request gets a request id
// (the X-Request-Id response header) and one audit record. The request's
// state comes from a pool (tokenState): nothing of it is referenced once
// the response is written.
func (s *Server) serveToken(w http.ResponseWriter, r *http.Request) {
	st := tokenStatePool.Get().(*tokenState)
	defer st.release()
	st.d = s.begin(metricsTransportHTTP)
	d := &st.d
	d.remote = r.RemoteAddr
	w.Header()[HeaderRequestID] = []string{d.id}
	resp, err := s.serveTokenRequest(r, d, &st.body)
	resp, err = s.finish(d, resp, err)
	if err != nil {
		writeError(w, s.protocolError(err))
		return
	}
	st.resp = tokenResponseJSON{AccessToken: resp.AccessToken, IssuedTokenType: string(resp.IssuedTokenType),
		TokenType: resp.TokenType, ExpiresIn: resp.ExpiresIn, Scope: resp.Scope}
	writeJSON(w, http.StatusOK, &st.resp)
}

// tokenResponseJSON is protocol.Response as JSON, with the token type a
// plain string: protocol.TokenType's MarshalText would cost an
// allocation.
type tokenResponseJSON struct {
	AccessToken     string `json:"access_token"`
	IssuedTokenType string `json:"issued_token_type,omitempty"`
	TokenType       string `json:"token_type"`
	ExpiresIn       int64  `json:"expires_in"`
	Scope           string `json:"scope,omitempty"`
}

// tokenState is what one HTTP token request needs besides its body
// buffer: the decision, which holds the request, subject, claims and
// response the pipeline establishes, the reader that bounds the body and
// the response as it is encoded. It is pooled, so a request costs none of
// these allocations.
type tokenState struct {
	d    decision
	body io.LimitedReader
	resp tokenResponseJSON
}

var tokenStatePool = sync.Pool{New: func() any { return new(tokenState) }}

// release returns st, zeroed, to the pool.
func (st *tokenState) release() {
	*st = tokenState{}
	tokenStatePool.Put(st)
}

// protocolError returns err as an Error, hiding anything else behind
// server_error.
func (s *Server) protocolError(err error) protocol.Error {
	var oauthErr protocol.Error
	if !errors.As(err, &oauthErr) {
		s.log.Error("token request failed", logKeyError, err.Error())
		oauthErr = protocol.ErrServerError.WithDescription("the token could not be issued")
	}
	return oauthErr
}

// serveTokenRequest authenticates the client of r and charges the
// caller's rate limit, then parses the body and, admitted under
// Config.MaxInFlight, runs exchange. The charge comes before the body, so
// a caller pays for a body it trickles in, and the in-flight slot after
// it, so such a body holds none.
func (s *Server) serveTokenRequest(r *http.Request, d *decision, body *io.LimitedReader) (*protocol.Response, error) {
	caller, proxy, err := s.authenticate(connAuthFrom(r.Context()), r.TLS, r.Header)
	if err != nil {
		return nil, err
	}
	d.caller, d.proxy = caller, proxy
	if err := s.chargeDecision(d); err != nil {
		return nil, err
	}
	buf := s.bufferPool.Get().(*bytes.Buffer)
	defer func() { buf.Reset(); s.bufferPool.Put(buf) }()
	*body = io.LimitedReader{R: r.Body, N: s.cfg.MaxBodyBytes + 1}
	req, err := parseTokenRequest(r, body, s.cfg.MaxBodyBytes, buf)
	if err != nil {
		return nil, err
	}
	d.reqStore = req
	d.req = &d.reqStore
	if !s.admit() {
		return nil, errOverloaded
	}
	defer s.release()
	// RFC 6749 §2.3: one authentication method per request.
	if req.otherClientAuth != "" || r.Header.Get("Authorization") != "" {
		return nil, protocol.ErrInvalidRequest.WithDescription("authenticate with the X509-SVID (tls_client_auth) only")
	}
	return s.exchange(r.Context(), caller, d.req, d)
}

// exchange issues a token to caller, an mTLS client already authenticated
// by its X509-SVID; the HTTP token endpoint and the gRPC API both call it,
// after authentication and parsing. It runs the steps every request goes
// through (RFC 8693 §2.1), in order: client_id (RFC 8705 §2.1), the
// grant's subject, the actor token, the policy, delegation (RFC 8693
// §4.1), the target (RFC 8693 §2.2.2 invalid_target), the scope (RFC 6749
// §3.3), the issued token type, the lifetime and the claims with the
// certificate binding (RFC 8705 §3). Protocol errors are protocol.Error
// values. It records what it establishes in d, for the audit record.
func (s *Server) exchange(ctx context.Context, caller stsid.Peer, req *Request, d *decision) (*protocol.Response, error) {
	// RFC 8705 §2.1: the client_id, when sent, names the certificate's
	// subject; here the SPIFFE ID in its SAN URI.
	if req.ClientID != "" && req.ClientID != caller.ID.String() {
		return nil, protocol.ErrInvalidClient.WithDescription("client_id does not match the client certificate's SPIFFE ID")
	}
	var err error
	if d.subjStore, err = s.subjectOf(ctx, caller, req); err != nil {
		return nil, err
	}
	subj := &d.subjStore
	d.subj = subj
	if err := s.checkActorToken(ctx, caller, req); err != nil {
		return nil, err
	}
	rule, ok := s.ruleFor(d, caller)
	if !ok {
		s.log.Info("caller denied by policy", logKeySPIFFEID, caller.ID.String())
		return nil, protocol.ErrUnauthorizedClient.WithDescription("no policy rule allows %s", caller.ID)
	}
	d.rule = rule
	act, err := s.actorChain(caller, rule, req, subj)
	if err != nil {
		return nil, err
	}
	var keepAudience []string
	if subj.issuedTo == caller.ID.String() {
		keepAudience = subj.audience
	}
	audience, err := grantAudience(rule, req, keepAudience)
	if err != nil {
		return nil, err
	}
	scopes, err := grantScopes(rule, req.Scope, subj)
	if err != nil {
		return nil, err
	}
	issuedType, err := issuedTokenType(req.RequestedTokenType)
	if err != nil {
		return nil, err
	}
	expiry, err := s.lifetime(caller, subj)
	if err != nil {
		return nil, err
	}
	d.claimsStore = tokenClaims(caller, subj, audience, scopes, act, expiry)
	claims := &d.claimsStore
	raw, err := s.cfg.Minter.Mint(ctx, claims, caller.Leaf, rule.MaxTTL)
	if err != nil {
		return nil, err
	}
	d.claims, d.issued, d.raw = claims, issuedType, raw
	s.logIssued(req, claims, d)
	d.respStore = response(req, claims, raw, issuedType)
	return &d.respStore, nil
}

// ruleFor returns the policy rule of caller, the first that matches. The
// rule looked up when the rate limit was charged (chargeDecision) is
// reused while the policy is the same; after a reload (SetPolicy) the
// new policy decides.
func (s *Server) ruleFor(d *decision, caller stsid.Peer) (*stsid.Rule, bool) {
	p := s.policy.Load()
	if p == d.chargedPolicy && p != nil && caller.ID == d.caller.ID {
		return d.chargedRule, d.chargedRule != nil
	}
	return p.RuleFor(caller.ID)
}

// chargeDecision charges the rate limit of d's caller, once per token
// request, after authentication and before the request's tokens are
// checked or one is signed; a malformed request is charged too. Over
// HTTP it comes before the body is read, so the audit record of a
// refusal names the caller but not what it asked; over gRPC the message
// is decoded before Exchange runs, so the record has the request too. A
// refusal records the rule that applied in d.
func (s *Server) chargeDecision(d *decision) error {
	p := s.policy.Load()
	rule, err := s.chargeUnder(p, d.caller)
	d.chargedPolicy, d.chargedRule = p, rule
	if err != nil {
		d.rule = rule
	}
	return err
}

// lifetime returns the issued token's expiry cap, zero for none: the
// subject token's remaining life, except for the caller's own JWT-SVID,
// which only proves who it is, as its certificate does. The Minter caps
// the token at the client certificate's NotAfter too; together they must
// leave at least a second (expires_in > 0, RFC 8693 §2.2.1).
func (s *Server) lifetime(caller stsid.Peer, subj *subject) (time.Time, error) {
	expiry := subj.expiry
	if subj.selfAsserted && subj.id == caller.ID {
		expiry = time.Time{}
	}
	deadline := caller.Leaf.NotAfter
	if !expiry.IsZero() && expiry.Before(deadline) {
		deadline = expiry
	}
	if deadline.Sub(s.cfg.Clock()) < time.Second {
		return time.Time{}, protocol.ErrInvalidGrant.WithDescription("the client certificate or subject token expires in under a second")
	}
	return expiry, nil
}

// tokenClaims are the claims of the issued token (RFC 9068 §2.2, RFC 8693
// §4.1 act) before the Minter adds iss, iat, nbf, exp, jti and the cnf
// binding to the caller's certificate (RFC 8705 §3.1).
func tokenClaims(caller stsid.Peer, subj *subject, audience accesstoken.Audience, scopes []string, act *accesstoken.Actor, expiry time.Time) accesstoken.Claims {
	claims := accesstoken.Claims{
		Subject:   subj.name(),
		SubjectID: subj.external,
		Audience:  audience,
		ClientID:  caller.ID.String(),
		Scope:     strings.Join(scopes, " "),
		Actor:     act,
	}
	if !expiry.IsZero() {
		claims.Expiry = expiry.Unix()
	}
	return claims
}

// logIssued records the issued token at debug, never the token itself,
// and the trusted proxy that forwarded the caller's certificate, if any.
// The audit trail is the record of decisions; at info this line cost a
// write per request.
func (s *Server) logIssued(req *Request, claims *accesstoken.Claims, d *decision) {
	if !s.log.IsDebug() {
		return
	}
	args := []any{logKeyRequestID, d.id,
		logKeySPIFFEID, claims.ClientID, logKeySubject, claims.Subject, logKeyGrantType, string(req.GrantType),
		logKeyJTI, claims.JWTID, logKeyX5TS256, claims.Confirmation.X5TS256, logKeyAudience, []string(claims.Audience),
		logKeyScope, claims.Scope, logKeyActors, claims.ActorChain(), logKeyExpiresIn, claims.Expiry - claims.IssuedAt}
	if !d.proxy.ID.IsZero() {
		args = append(args, logKeyProxy, d.proxy.ID.String())
	}
	s.log.Debug("token issued", args...)
}

// response is the RFC 8693 §2.2.1 success response for the minted claims;
// client_credentials has no issued_token_type (RFC 6749 §5.1).
func response(req *Request, claims *accesstoken.Claims, raw string, issuedType protocol.TokenType) protocol.Response {
	resp := protocol.Response{
		AccessToken:     raw,
		IssuedTokenType: issuedType,
		TokenType:       "Bearer",
		ExpiresIn:       claims.Expiry - claims.IssuedAt,
	}
	// RFC 6749 §5.1: scope is required when it differs from the request.
	if claims.Scope != req.Scope {
		resp.Scope = claims.Scope
	}
	if req.GrantType == protocol.GrantTypeClientCredentials {
		resp.IssuedTokenType = ""
	}
	return resp
}

// subjectOf dispatches on grant_type and, for token exchange, on
// subject_token_type.
func (s *Server) subjectOf(ctx context.Context, caller stsid.Peer, req *Request) (subject, error) {
	switch req.GrantType {
	case protocol.GrantTypeClientCredentials:
		if req.SubjectToken != "" || req.ActorToken != "" {
			return subject{}, protocol.ErrInvalidRequest.WithDescription("client_credentials takes no subject_token or actor_token")
		}
		return subject{id: caller.ID, selfAsserted: true}, nil
	case protocol.GrantTypeTokenExchange:
	case "":
		return subject{}, protocol.ErrInvalidRequest.WithDescription("grant_type is required")
	default:
		return subject{}, protocol.ErrUnsupportedGrantType.WithDescription("supported grant types are %s and %s", protocol.GrantTypeTokenExchange, protocol.GrantTypeClientCredentials)
	}
	switch {
	case req.SubjectToken == "":
		return subject{}, protocol.ErrInvalidRequest.WithDescription("subject_token is required")
	case req.SubjectTokenType == "":
		return subject{}, protocol.ErrInvalidRequest.WithDescription("subject_token_type is required")
	}
	verifier, ok := s.subjects[req.SubjectTokenType]
	if !ok {
		return subject{}, protocol.ErrInvalidRequest.WithDescription("subject_token_type must be %s or %s", protocol.TokenTypeJWT, protocol.TokenTypeAccessToken)
	}
	return verifier.verifySubject(ctx, req.SubjectToken)
}

// actorChain decides who the issued token says acts for the subject
// (RFC 8693 §1.1, §4.1) and whether policy allows it:
//
//   - the caller's own credentials: no new actor;
//   - re-bind of a token of ours issued to the caller: the same chain;
//   - anything else is delegation: the caller becomes the outermost actor
//     over the subject token's chain, or with impersonation, asked for and
//     allowed, no act at all. No laundering: a token of ours or a JWT-SVID
//     passes to a new holder only when it was sent to that holder (the
//     caller is in its aud); a stolen one gets invalid_grant and is logged
//     as a security event. may_act (RFC 8693 §4.4), when present, must name
//     the caller.
//
// A token for anyone but the caller needs the rule's Delegation to allow
// that subject, impersonation if there is no act, and the chain depth.
func (s *Server) actorChain(caller stsid.Peer, rule *stsid.Rule, req *Request, subj *subject) (*accesstoken.Actor, error) {
	callerID := caller.ID.String()
	var act *accesstoken.Actor
	switch {
	case subj.selfAsserted && subj.id == caller.ID:
		if req.Impersonate {
			return nil, protocol.ErrInvalidRequest.WithDescription("impersonation needs a subject token of someone else")
		}
		return nil, nil
	case subj.issuedTo == callerID:
		act = subj.actor
		if subj.external == nil && subj.id == caller.ID && act == nil {
			return nil, nil // the caller's own token, re-bound
		}
	default:
		if !subj.fromExternalIssuer && !slices.Contains(subj.sentTo, callerID) {
			s.log.Warn("security event: subject token presented by a client it was neither issued nor sent to",
				logKeySecurityEvent, "token_laundering", logKeySPIFFEID, callerID, logKeySubject, subj.name(), logKeyJTI, subj.jti)
			return nil, protocol.ErrInvalidGrant.WithDescription("the subject token was neither issued nor sent to this client")
		}
		if subj.mayAct != nil && subj.mayAct.Subject != callerID {
			return nil, protocol.ErrInvalidRequest.WithDescription("the subject token's may_act does not allow this client to act for %s", truncate(subj.name()))
		}
		if req.Impersonate {
			if subj.actor != nil {
				return nil, protocol.ErrInvalidRequest.WithDescription("a subject token with an act chain cannot be impersonated")
			}
		} else {
			act = &accesstoken.Actor{Subject: callerID, Actor: subj.actor}
		}
	}
	d := rule.Delegation
	depth := actorDepth(act)
	switch {
	case d == nil:
		return nil, protocol.ErrInvalidRequest.WithDescription("policy does not let this client act for others")
	case subj.external != nil && !rule.MayActForIssuer(subj.issuerName):
		return nil, protocol.ErrInvalidRequest.WithDescription("policy does not let this client act for subjects of issuer %q", subj.issuerName)
	case subj.external == nil && !rule.MayActFor(subj.id):
		return nil, protocol.ErrInvalidRequest.WithDescription("policy does not let this client act for %s", subj.id)
	case act == nil && !d.Impersonation:
		return nil, protocol.ErrInvalidRequest.WithDescription("policy does not let this client impersonate")
	case depth > d.MaxDepth:
		return nil, protocol.ErrInvalidRequest.WithDescription("the act chain would have %d actors; policy allows %d", depth, d.MaxDepth)
	}
	return act, nil
}

func actorDepth(a *accesstoken.Actor) int {
	n := 0
	for ; a != nil; a = a.Actor {
		n++
	}
	return n
}

// checkActorToken validates an actor_token (RFC 8693 §2.1). The actor is
// always the authenticated caller; an actor token, when sent, must name
// it, else invalid_request (RFC 8693 §2.2.2).
func (s *Server) checkActorToken(ctx context.Context, caller stsid.Peer, req *Request) error {
	switch {
	case req.ActorToken == "" && req.ActorTokenType == "":
		return nil
	case req.ActorToken == "" || req.ActorTokenType == "":
		return protocol.ErrInvalidRequest.WithDescription("actor_token and actor_token_type go together")
	}
	var actor string
	switch req.ActorTokenType {
	case protocol.TokenTypeJWT:
		e, err := s.validateJWTSVID(req.ActorToken)
		if err != nil {
			return protocol.ErrInvalidRequest.WithDescription("actor_token is not a valid JWT-SVID for this server")
		}
		actor = e.id.String()
	case protocol.TokenTypeAccessToken:
		claims, err := s.verifyOwnToken(ctx, req.ActorToken)
		if err != nil || claims.ClientID != claims.Subject {
			return protocol.ErrInvalidRequest.WithDescription("actor_token is not an access token this server issued to its subject")
		}
		actor = claims.Subject
	default:
		return protocol.ErrInvalidRequest.WithDescription("actor_token_type must be %s or %s", protocol.TokenTypeJWT, protocol.TokenTypeAccessToken)
	}
	if actor != caller.ID.String() {
		return protocol.ErrInvalidRequest.WithDescription("actor_token must name the caller, %s", caller.ID)
	}
	return nil
}

// grantAudience returns the token's audience: every audience and resource
// requested (RFC 8693 §2.1), or keep when none is, each allowed by the
// rule (else invalid_target, RFC 8693 §2.2.2).
func grantAudience(rule *stsid.Rule, req *Request, keep []string) (accesstoken.Audience, error) {
	for _, res := range req.Resource {
		// RFC 8707 §2: an absolute URI without a fragment.
		if u, err := url.Parse(res); err != nil || !u.IsAbs() || u.Fragment != "" || strings.Contains(res, "#") {
			return nil, protocol.ErrInvalidTarget.WithDescription("resource must be an absolute URI without a fragment")
		}
	}
	var audience accesstoken.Audience
	if len(req.Audience) == 1 && len(req.Resource) == 0 {
		// The usual request, one audience: shared with the request, as
		// neither is modified.
		audience = req.Audience
	} else {
		audience = make(accesstoken.Audience, 0, len(req.Audience)+len(req.Resource))
		for _, list := range [][]string{req.Audience, req.Resource} {
			for _, aud := range list {
				if !slices.Contains(audience, aud) {
					audience = append(audience, aud)
				}
			}
		}
	}
	if len(audience) == 0 {
		if len(keep) == 0 {
			return nil, protocol.ErrInvalidRequest.WithDescription("audience or resource is required")
		}
		audience = append(audience, keep...)
	}
	for _, aud := range audience {
		if !rule.AllowsAudience(aud) {
			return nil, protocol.ErrInvalidTarget.WithDescription("audience %q is not allowed for this client", truncate(aud))
		}
	}
	return audience, nil
}

// grantScopes applies the scope ceilings: granted = requested ∩ rule ∩
// subject token. With no scope requested the subject token's scopes are
// kept, or else the rule's defaults apply.
func grantScopes(rule *stsid.Rule, requested string, subj *subject) ([]string, error) {
	var req []string
	if requested != "" {
		req = strings.Split(requested, " ")
	}
	for _, sc := range req {
		if !jwtcheck.IsScopeToken(sc) {
			return nil, protocol.ErrInvalidScope.WithDescription("scope must be space-separated scope tokens (RFC 6749 §3.3)")
		}
	}
	if req == nil && subj.scoped {
		req = subj.scopes
	}
	var granted []string
	if req == nil {
		// rule.GrantScopes(nil), without its copy: granted is only read.
		granted = rule.DefaultScopes
	} else {
		granted = rule.GrantScopes(req)
	}
	if subj.scoped {
		granted = slices.DeleteFunc(slices.Clone(granted), func(sc string) bool { return !slices.Contains(subj.scopes, sc) })
	}
	if requested != "" && len(granted) == 0 {
		return nil, protocol.ErrInvalidScope.WithDescription("none of the requested scopes is allowed for this client")
	}
	return granted, nil
}

// issuedTokenType maps requested_token_type to the type issued: the tokens
// are RFC 9068 JWT access tokens, so either name is honoured.
func issuedTokenType(requested protocol.TokenType) (protocol.TokenType, error) {
	switch requested {
	case "", protocol.TokenTypeAccessToken:
		return protocol.TokenTypeAccessToken, nil
	case protocol.TokenTypeJWT:
		return protocol.TokenTypeJWT, nil
	default:
		return "", protocol.ErrInvalidRequest.WithDescription("requested_token_type must be %s or %s", protocol.TokenTypeAccessToken, protocol.TokenTypeJWT)
	}
}

// truncate shortens client-supplied text echoed in a description.
func truncate(s string) string {
	if len(s) > 128 {
		return s[:128] + "..."
	}
	return s
}
