package exchange

import (
	"context"
	"errors"
	"slices"
	"time"

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
	now := s.cfg.Clock()
	if !now.Before(svid.Expiry) {
		return subject{}, ErrInvalidGrant.WithDescription("the subject token has expired")
	}
	if nbf, ok := svid.Claims["nbf"].(float64); ok && now.Before(time.Unix(int64(nbf), 0)) {
		return subject{}, ErrInvalidGrant.WithDescription("the subject token is not yet valid")
	}
	return subject{id: svid.ID}, nil
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
