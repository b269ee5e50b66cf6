package exchange

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
	stsid "github.com/spiffe-sts/spiffe-sts/spiffeid"
)

// jwtSVIDVerifier accepts JWT-SVIDs (subject_token_type
// urn:ietf:params:oauth:token-type:jwt) whose audience names this server:
// its issuer URL, its token endpoint URL or its own SPIFFE ID
// (draft-ietf-oauth-spiffe-client-auth, RFC 7523 §3).
type jwtSVIDVerifier struct{ s *Server }

func (v jwtSVIDVerifier) verifySubject(_ context.Context, _ stsid.Peer, token string) (subject, error) {
	s := v.s
	now := s.cfg.Clock()
	if id, ok := s.svids.get(token, s.cfg.JWTBundles, now); ok {
		return subject{id: id}, nil
	}
	audiences := []string{s.cfg.IssuerURL, s.tokenURL}
	if own, err := s.cfg.SVIDs.GetX509SVID(); err == nil {
		audiences = append(audiences, own.ID.String())
	}
	svid, err := jwtsvid.ParseAndValidate(token, s.cfg.JWTBundles, audiences)
	if err != nil {
		s.log.Warn("JWT-SVID subject token refused", logKeyReason, err.Error())
		return subject{}, ErrInvalidGrant.WithDescription("the subject token is not a valid JWT-SVID for this server: %s", err)
	}
	if !slices.Contains(s.trusted, svid.ID.TrustDomain()) {
		return subject{}, ErrInvalidGrant.WithDescription("the subject token's trust domain %q is not trusted", svid.ID.TrustDomain().Name())
	}
	// go-spiffe allows a minute of skew on exp and nbf; this server
	// allows none.
	var notBefore time.Time
	if nbf, ok := svid.Claims["nbf"].(float64); ok {
		notBefore = time.Unix(int64(nbf), 0)
	}
	if !now.Before(svid.Expiry) {
		return subject{}, ErrInvalidGrant.WithDescription("the subject token has expired")
	}
	if now.Before(notBefore) {
		return subject{}, ErrInvalidGrant.WithDescription("the subject token is not yet valid")
	}
	s.rememberSVID(token, svid.ID, svid.Expiry, notBefore)
	return subject{id: svid.ID}, nil
}

// rememberSVID caches a validated JWT-SVID with the authority that signed
// it, read from the header by go-jose, the parser go-spiffe validated it
// with.
func (s *Server) rememberSVID(token string, id spiffeid.ID, expiry, notBefore time.Time) {
	tok, err := jwt.ParseSigned(token, jwtSVIDAlgorithms)
	if err != nil || len(tok.Headers) != 1 {
		return
	}
	bundle, err := s.cfg.JWTBundles.GetJWTBundleForTrustDomain(id.TrustDomain())
	if err != nil {
		return
	}
	kid := tok.Headers[0].KeyID
	key, ok := bundle.FindJWTAuthority(kid)
	if !ok {
		return
	}
	s.svids.put(token, svidCacheEntry{id: id, kid: kid, key: key, expiry: expiry, notBefore: notBefore})
}

// jwtSVIDAlgorithms are the algorithms the JWT-SVID specification allows
// (JWT-SVID §2.1); go-spiffe enforces the same list.
var jwtSVIDAlgorithms = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512, jose.ES256, jose.ES384, jose.ES512, jose.PS256, jose.PS384, jose.PS512,
}

// accessTokenVerifier accepts access tokens this server issued
// (subject_token_type urn:ietf:params:oauth:token-type:access_token). The
// token must have been issued to the caller itself; it may be bound to an
// earlier certificate of the caller, which lets a workload re-bind its
// grant after its SVID rotates.
type accessTokenVerifier struct{ s *Server }

func (v accessTokenVerifier) verifySubject(ctx context.Context, caller stsid.Peer, token string) (subject, error) {
	s := v.s
	claims, err := s.accessTV.InsecureVerifyWithoutBinding(ctx, token)
	if err != nil {
		var expired *accesstoken.ExpiredError
		switch {
		case errors.As(err, &expired):
			return subject{}, ErrInvalidGrant.WithDescription("the subject token has expired")
		case errors.Is(err, accesstoken.ErrNotYetValid):
			return subject{}, ErrInvalidGrant.WithDescription("the subject token is not yet valid")
		default:
			s.log.Warn("access token subject token refused", logKeyReason, err.Error())
			return subject{}, ErrInvalidGrant.WithDescription("the subject token is not an access token issued by this server")
		}
	}
	id, err := spiffeid.FromString(claims.Subject)
	if err != nil {
		return subject{}, ErrInvalidGrant.WithDescription("the subject token's subject is not a SPIFFE ID")
	}
	if claims.ClientID != caller.ID.String() {
		s.log.Warn("access token presented by a client it was not issued to", logKeySPIFFEID, caller.ID.String(), logKeySubject, claims.Subject, logKeyJTI, claims.JWTID)
		return subject{}, ErrInvalidGrant.WithDescription("the subject token was not issued to this client")
	}
	return subject{
		id:       id,
		scoped:   true,
		scopes:   claims.Scopes(),
		audience: claims.Audience,
		expiry:   time.Unix(claims.Expiry, 0),
		actor:    claims.Actor,
	}, nil
}
