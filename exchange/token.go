package exchange

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	stsid "github.com/spiffe-sts/spiffe-sts/spiffeid"
)

// subject is what a grant establishes about the token's subject before the
// shared steps run.
type subject struct {
	id spiffeid.ID
	// scoped is set when the subject token carries a scope ceiling; scopes
	// is then that ceiling (an exchange never widens a grant).
	scoped bool
	scopes []string
	// audience is the audience to keep when the request names none.
	audience []string
	// expiry caps the issued token's lifetime; zero when uncapped.
	expiry time.Time
	// actor is the subject token's act chain, carried forward unchanged.
	actor *accesstoken.Actor
}

// subjectVerifier validates one subject_token_type (RFC 8693 §2.1). It
// only establishes the subject: the dispatcher runs every shared step.
type subjectVerifier interface {
	verifySubject(ctx context.Context, caller stsid.Peer, token string) (subject, error)
}

// tokenResponse is the RFC 8693 §2.2.1 success response.
type tokenResponse struct {
	AccessToken     string    `json:"access_token"`
	IssuedTokenType TokenType `json:"issued_token_type,omitempty"`
	TokenType       string    `json:"token_type"`
	ExpiresIn       int64     `json:"expires_in"`
	Scope           string    `json:"scope,omitempty"`
}

// serveToken is the token endpoint.
func (s *Server) serveToken(w http.ResponseWriter, r *http.Request) {
	resp, err := s.token(r)
	if err != nil {
		var oauthErr Error
		if !errors.As(err, &oauthErr) {
			s.log.Error("token request failed", logKeyError, err.Error())
			oauthErr = ErrServerError.WithDescription("the token could not be issued")
		}
		writeError(w, oauthErr)
		return
	}
	writeJSON(w, http.StatusOK, resp)
}

// token runs the steps every request goes through, in order: client
// authentication, parsing, client_id, the grant's subject, the policy,
// the target, the scope, the lifetime and the certificate binding.
func (s *Server) token(r *http.Request) (*tokenResponse, error) {
	caller, err := s.authenticateClient(r)
	if err != nil {
		return nil, err
	}
	buf := s.bufferPool.Get().(*bytes.Buffer)
	defer func() { buf.Reset(); s.bufferPool.Put(buf) }()
	req, err := parseTokenRequest(r, s.cfg.MaxBodyBytes, buf)
	if err != nil {
		return nil, err
	}
	// RFC 6749 §2.3: one authentication method per request.
	if req.otherClientAuth != "" || r.Header.Get("Authorization") != "" {
		return nil, ErrInvalidRequest.WithDescription("authenticate with the X509-SVID (tls_client_auth) only")
	}
	// RFC 8705 §2.1: the client_id, when sent, names the certificate's
	// subject; here the SPIFFE ID in its SAN URI.
	if req.clientID != "" && req.clientID != caller.ID.String() {
		return nil, ErrInvalidClient.WithDescription("client_id does not match the client certificate's SPIFFE ID")
	}

	subj, err := s.subjectOf(r.Context(), caller, &req)
	if err != nil {
		return nil, err
	}
	if subj.id != caller.ID {
		s.log.Warn("exchange for another subject refused", logKeySPIFFEID, caller.ID.String(), logKeySubject, subj.id.String())
		return nil, ErrInvalidGrant.WithDescription("the subject token names %s, not the caller; delegation is not supported", subj.id)
	}

	rule, ok := s.policy.Load().RuleFor(caller.ID)
	if !ok {
		s.log.Info("caller denied by policy", logKeySPIFFEID, caller.ID.String())
		return nil, ErrUnauthorizedClient.WithDescription("no policy rule allows %s", caller.ID)
	}
	audience, err := grantAudience(rule, &req, &subj)
	if err != nil {
		return nil, err
	}
	scopes, err := grantScopes(rule, req.scope, &subj)
	if err != nil {
		return nil, err
	}
	issuedType, err := issuedTokenType(req.requestedTokenType)
	if err != nil {
		return nil, err
	}

	// A token must live at least a second (expires_in > 0, RFC 8693
	// §2.2.1); a certificate or subject token about to expire cannot
	// back one.
	deadline := caller.Leaf.NotAfter
	if !subj.expiry.IsZero() && subj.expiry.Before(deadline) {
		deadline = subj.expiry
	}
	if deadline.Sub(s.cfg.Clock()) < time.Second {
		return nil, ErrInvalidGrant.WithDescription("the client certificate or subject token expires in under a second")
	}

	claims := accesstoken.Claims{
		Subject:  subj.id.String(),
		Audience: audience,
		ClientID: caller.ID.String(),
		Scope:    strings.Join(scopes, " "),
		Actor:    subj.actor,
	}
	if !subj.expiry.IsZero() {
		claims.Expiry = subj.expiry.Unix()
	}
	raw, err := s.cfg.Minter.Mint(r.Context(), &claims, caller.Leaf, rule.MaxTTL)
	if err != nil {
		return nil, err
	}
	s.log.Info("token issued",
		logKeySPIFFEID, claims.ClientID, logKeyGrantType, req.grantType, logKeyJTI, claims.JWTID,
		logKeyX5TS256, claims.Confirmation.X5TS256, logKeyAudience, []string(audience), logKeyScope, claims.Scope,
		logKeyExpiresIn, claims.Expiry-claims.IssuedAt)
	resp := &tokenResponse{
		AccessToken:     raw,
		IssuedTokenType: issuedType,
		TokenType:       "Bearer",
		ExpiresIn:       claims.Expiry - claims.IssuedAt,
	}
	// RFC 6749 §5.1: scope is required when it differs from the request.
	if claims.Scope != req.scope {
		resp.Scope = claims.Scope
	}
	if GrantType(req.grantType) == GrantTypeClientCredentials {
		resp.IssuedTokenType = ""
	}
	return resp, nil
}

// subjectOf dispatches on grant_type and, for token exchange, on
// subject_token_type.
func (s *Server) subjectOf(ctx context.Context, caller stsid.Peer, req *tokenRequest) (subject, error) {
	switch GrantType(req.grantType) {
	case GrantTypeClientCredentials:
		if req.subjectToken != "" || req.actorToken != "" {
			return subject{}, ErrInvalidRequest.WithDescription("client_credentials takes no subject_token or actor_token")
		}
		return subject{id: caller.ID}, nil
	case GrantTypeTokenExchange:
	case "":
		return subject{}, ErrInvalidRequest.WithDescription("grant_type is required")
	default:
		return subject{}, ErrUnsupportedGrantType.WithDescription("supported grant types are %s and %s", GrantTypeTokenExchange, GrantTypeClientCredentials)
	}
	switch {
	case req.subjectToken == "":
		return subject{}, ErrInvalidRequest.WithDescription("subject_token is required")
	case req.subjectTokenType == "":
		return subject{}, ErrInvalidRequest.WithDescription("subject_token_type is required")
	case req.actorToken != "" || req.actorTokenType != "":
		return subject{}, ErrInvalidRequest.WithDescription("actor_token is not supported: the caller is the actor")
	}
	verifier, ok := s.subjects[TokenType(req.subjectTokenType)]
	if !ok {
		return subject{}, ErrInvalidRequest.WithDescription("subject_token_type must be %s or %s", TokenTypeJWT, TokenTypeAccessToken)
	}
	return verifier.verifySubject(ctx, caller, req.subjectToken)
}

// grantAudience returns the token's audience: every audience and resource
// requested (RFC 8693 §2.1), or the subject token's own when none is, each
// allowed by the rule (else invalid_target, RFC 8693 §2.2.2).
func grantAudience(rule *stsid.Rule, req *tokenRequest, subj *subject) (accesstoken.Audience, error) {
	for _, res := range req.resource {
		// RFC 8707 §2: an absolute URI without a fragment.
		if u, err := url.Parse(res); err != nil || !u.IsAbs() || u.Fragment != "" || strings.Contains(res, "#") {
			return nil, ErrInvalidTarget.WithDescription("resource must be an absolute URI without a fragment")
		}
	}
	audience := make(accesstoken.Audience, 0, len(req.audience)+len(req.resource))
	for _, list := range [][]string{req.audience, req.resource} {
		for _, aud := range list {
			if !slices.Contains(audience, aud) {
				audience = append(audience, aud)
			}
		}
	}
	if len(audience) == 0 {
		if len(subj.audience) == 0 {
			return nil, ErrInvalidRequest.WithDescription("audience or resource is required")
		}
		audience = append(audience, subj.audience...)
	}
	for _, aud := range audience {
		if !rule.AllowsAudience(aud) {
			return nil, ErrInvalidTarget.WithDescription("audience %q is not allowed for this client", truncate(aud))
		}
	}
	return audience, nil
}

// grantScopes applies the scope ceilings: granted = requested ∩ rule ∩
// subject token. With no scope requested the subject token's scopes are
// kept, or else the rule's defaults apply.
func grantScopes(rule *stsid.Rule, requested string, subj *subject) ([]string, error) {
	req := strings.Split(requested, " ")
	if requested == "" {
		req = nil
	}
	for _, sc := range req {
		if !validScopeToken(sc) {
			return nil, ErrInvalidScope.WithDescription("scope must be space-separated scope tokens (RFC 6749 §3.3)")
		}
	}
	if req == nil && subj.scoped {
		req = subj.scopes
	}
	var granted []string
	if req == nil {
		granted = rule.GrantScopes(nil)
	} else {
		granted = rule.GrantScopes(req)
	}
	if subj.scoped {
		granted = slices.DeleteFunc(slices.Clone(granted), func(sc string) bool { return !slices.Contains(subj.scopes, sc) })
	}
	if requested != "" && len(granted) == 0 {
		return nil, ErrInvalidScope.WithDescription("none of the requested scopes is allowed for this client")
	}
	return granted, nil
}

// validScopeToken reports whether s is an RFC 6749 §3.3 scope-token:
// 1*( %x21 / %x23-5B / %x5D-7E ).
func validScopeToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x21 || c == 0x22 || c == 0x5C || c > 0x7E {
			return false
		}
	}
	return true
}

// issuedTokenType maps requested_token_type to the type issued: the tokens
// are RFC 9068 JWT access tokens, so either name is honoured.
func issuedTokenType(requested string) (TokenType, error) {
	switch TokenType(requested) {
	case "", TokenTypeAccessToken:
		return TokenTypeAccessToken, nil
	case TokenTypeJWT:
		return TokenTypeJWT, nil
	default:
		return "", ErrInvalidRequest.WithDescription("requested_token_type must be %s or %s", TokenTypeAccessToken, TokenTypeJWT)
	}
}

// truncate shortens client-supplied text echoed in a description.
func truncate(s string) string {
	if len(s) > 128 {
		return s[:128] + "..."
	}
	return s
}
