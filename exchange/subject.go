package exchange

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"time"

	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
	"github.com/spiffe-sts/spiffe-sts/internal/accesshook"
	"github.com/spiffe-sts/spiffe-sts/internal/jwtcheck"
)

// jwtVerifier accepts JWT subject tokens (subject_token_type
// urn:ietf:params:oauth:token-type:jwt): a token whose "iss" is a
// configured external issuer goes to that issuer; any other is a JWT-SVID.
type jwtVerifier struct{ s *Server }

func (v jwtVerifier) verifySubject(ctx context.Context, token string) (subject, error) {
	s := v.s
	if len(s.external) > 0 {
		if ext, ok := s.external[unverifiedIssuer(token)]; ok {
			return s.externalSubject(ctx, ext, token)
		}
	}
	e, err := s.validateJWTSVID(token)
	if err != nil {
		return subject{}, err
	}
	return subject{id: e.id, selfAsserted: true, sentTo: e.audience, expiry: e.expiry}, nil
}

// validateJWTSVID validates a JWT-SVID whose audience names this server:
// its issuer URL, its token endpoint URL or its own SPIFFE ID
// (draft-ietf-oauth-spiffe-client-auth, RFC 7523 §3), from the cache when
// it was validated before.
func (s *Server) validateJWTSVID(token string) (svidCacheEntry, error) {
	now := s.cfg.Clock()
	e, hit := s.svids.get(token, s.cfg.JWTBundles, now)
	if s.cfg.Metrics != nil {
		s.cfg.Metrics.SVIDCacheLookup(hit)
	}
	if hit {
		return e, s.checkFresh(e.id.TrustDomain())
	}
	audiences := []string{s.cfg.IssuerURL, s.tokenURL}
	if own, err := s.cfg.SVIDs.GetX509SVID(); err == nil {
		audiences = append(audiences, own.ID.String())
	}
	svid, err := jwtsvid.ParseAndValidate(token, s.cfg.JWTBundles, audiences)
	if err != nil {
		// go-spiffe's text is detail for the log, never for the client.
		s.log.Warn("JWT-SVID refused", logKeyReason, err.Error())
		return svidCacheEntry{}, withDetail(protocol.ErrInvalidGrant.WithDescription("the subject token is not a valid JWT-SVID for this server"), err.Error())
	}
	if !slices.Contains(s.trusted, svid.ID.TrustDomain()) {
		return svidCacheEntry{}, protocol.ErrInvalidGrant.WithDescription("the subject token's trust domain %q is not trusted", svid.ID.TrustDomain().Name())
	}
	if err := s.checkFresh(svid.ID.TrustDomain()); err != nil {
		return svidCacheEntry{}, err
	}
	// go-spiffe allows a minute of skew on exp and nbf; this server
	// allows none.
	e = svidCacheEntry{id: svid.ID, audience: svid.Audience, expiry: svid.Expiry}
	if nbf, ok := svid.Claims["nbf"].(float64); ok {
		e.notBefore = time.Unix(int64(nbf), 0)
	}
	if !now.Before(e.expiry) {
		return svidCacheEntry{}, protocol.ErrInvalidGrant.WithDescription("the subject token has expired")
	}
	if now.Before(e.notBefore) {
		return svidCacheEntry{}, protocol.ErrInvalidGrant.WithDescription("the subject token is not yet valid")
	}
	s.rememberSVID(token, e)
	return e, nil
}

// rememberSVID caches a validated JWT-SVID with the authority that signed
// it, named by the "kid" of its header.
func (s *Server) rememberSVID(token string, e svidCacheEntry) {
	msg, ok := parseCompact(token)
	if !ok {
		return
	}
	bundle, err := s.cfg.JWTBundles.GetJWTBundleForTrustDomain(e.id.TrustDomain())
	if err != nil {
		return
	}
	if e.kid, _ = msg.Signatures()[0].ProtectedHeaders().KeyID(); e.kid == "" {
		return
	}
	key, ok := bundle.FindJWTAuthority(e.kid)
	if !ok {
		return
	}
	e.key = key
	s.svids.put(token, e)
}

// parseCompact parses, without verifying it, a JWS compact serialization
// with one signature (RFC 7515 §7.1).
func parseCompact(token string) (*jws.Message, bool) {
	if !jwtcheck.IsCompactJWS(token) {
		return nil, false
	}
	msg, err := jws.Parse([]byte(token), jws.WithCompact())
	if err != nil || len(msg.Signatures()) != 1 {
		return nil, false
	}
	return msg, true
}

// unverifiedIssuer returns the "iss" of a JWT without verifying it, only
// to choose the verifier; "" when there is none. The chosen verifier
// checks everything, algorithm included.
func unverifiedIssuer(token string) string {
	msg, ok := parseCompact(token)
	if !ok {
		return ""
	}
	var claims struct {
		Issuer string `json:"iss"`
	}
	if err := json.Unmarshal(msg.Payload(), &claims); err != nil {
		return ""
	}
	return claims.Issuer
}

// externalSubject verifies a token of an external issuer: its subject
// (an end user, say) is qualified by the issuer (RFC 9493 iss_sub).
func (s *Server) externalSubject(ctx context.Context, ext ExternalIssuer, token string) (subject, error) {
	claims, err := ext.Verify(ctx, token)
	if err != nil {
		s.log.Warn("external subject token refused", logKeyIssuer, ext.Name(), logKeyReason, err.Error())
		return subject{}, withDetail(protocol.ErrInvalidGrant.WithDescription("the subject token was refused by issuer %q", ext.Name()), err.Error())
	}
	if claims.Subject == "" || claims.Expiry == 0 {
		return subject{}, protocol.ErrInvalidGrant.WithDescription("the subject token of issuer %q has no sub or exp", ext.Name())
	}
	subj := subject{
		external:           &accesstoken.SubjectID{Format: accesstoken.SubjectIDFormatIssSub, Issuer: ext.Issuer(), Subject: claims.Subject},
		issuerName:         ext.Name(),
		fromExternalIssuer: true,
		sentTo:             claims.Audience,
		expiry:             time.Unix(claims.Expiry, 0),
		actor:              claims.Actor,
		mayAct:             claims.MayAct,
		jti:                claims.JWTID,
	}
	if claims.Scope != "" {
		subj.scoped, subj.scopes = true, claims.Scopes()
	}
	return subj, nil
}

// accessTokenVerifier accepts access tokens this server issued
// (subject_token_type urn:ietf:params:oauth:token-type:access_token),
// possibly bound to another certificate: who may present one is decided by
// actorChain (re-bind by the client it was issued to, or delegation by a
// client it was sent to).
type accessTokenVerifier struct{ s *Server }

func (v accessTokenVerifier) verifySubject(ctx context.Context, token string) (subject, error) {
	s := v.s
	claims, err := s.verifyOwnToken(ctx, token)
	if err != nil {
		var expired *accesstoken.ExpiredError
		switch {
		case errors.As(err, &expired):
			return subject{}, protocol.ErrInvalidGrant.WithDescription("the subject token has expired")
		case errors.Is(err, accesstoken.ErrNotYetValid):
			return subject{}, protocol.ErrInvalidGrant.WithDescription("the subject token is not yet valid")
		default:
			s.log.Warn("access token subject token refused", logKeyReason, err.Error())
			return subject{}, withDetail(protocol.ErrInvalidGrant.WithDescription("the subject token is not an access token issued by this server"), err.Error())
		}
	}
	subj := subject{
		issuedTo: claims.ClientID,
		sentTo:   claims.Audience,
		audience: claims.Audience,
		scoped:   true,
		scopes:   claims.Scopes(),
		expiry:   time.Unix(claims.Expiry, 0),
		actor:    claims.Actor,
		jti:      claims.JWTID,
	}
	if claims.SubjectID != nil {
		ext, ok := s.external[claims.SubjectID.Issuer]
		if !ok {
			return subject{}, protocol.ErrInvalidGrant.WithDescription("the subject token's subject comes from an issuer this server no longer trusts")
		}
		subj.external, subj.issuerName = claims.SubjectID, ext.Name()
		return subj, nil
	}
	if subj.id, err = spiffeid.FromString(claims.Subject); err != nil {
		return subject{}, protocol.ErrInvalidGrant.WithDescription("the subject token's subject is not a SPIFFE ID")
	}
	return subj, nil
}

// verifyOwnToken checks an access token this server issued as a resource
// server would, except for the certificate binding and the audience: the
// caller decides who may present it (see actorChain and checkActorToken).
// Its errors are accesstoken's: an expired token is an
// *accesstoken.ExpiredError, one not yet valid wraps
// accesstoken.ErrNotYetValid.
func (s *Server) verifyOwnToken(ctx context.Context, token string) (*accesstoken.Claims, error) {
	return accesshook.VerifyWithoutBinding[*accesstoken.Claims](ctx, s.accessTV, token)
}
