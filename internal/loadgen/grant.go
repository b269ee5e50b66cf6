package loadgen

import (
	"net/url"
	"strings"

	"github.com/spiffe-sts/spiffe-sts/exchange/exchangepb"
	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
)

// Grant is what each request asks for.
type Grant struct {
	// GrantType is token exchange (RFC 8693 §2.1) or client_credentials
	// (RFC 6749 §4.4).
	GrantType protocol.GrantType
	Audience  []string
	Scope     []string
	// SubjectTokens are the JWT-SVIDs of a token exchange; request seq
	// sends SubjectTokens[seq % len]. One reused token measures the server
	// with the token already validated; a pool of distinct ones, used once
	// each, measures its cold path.
	SubjectTokens []string
}

// forms returns the request bodies, one per subject token.
func (g Grant) forms() []string {
	base := url.Values{protocol.ParamGrantType: {g.GrantType.String()}}
	if len(g.Audience) > 0 {
		base[protocol.ParamAudience] = g.Audience
	}
	if len(g.Scope) > 0 {
		base.Set(protocol.ParamScope, strings.Join(g.Scope, " "))
	}
	if len(g.SubjectTokens) == 0 {
		return []string{base.Encode()}
	}
	out := make([]string, len(g.SubjectTokens))
	for i, tok := range g.SubjectTokens {
		v := url.Values{protocol.ParamSubjectToken: {tok}, protocol.ParamSubjectTokenType: {protocol.TokenTypeJWT.String()}}
		for k, vs := range base {
			v[k] = vs
		}
		out[i] = v.Encode()
	}
	return out
}

// messages returns the gRPC requests, one per subject token.
func (g Grant) messages() []*exchangepb.ExchangeRequest {
	base := func() *exchangepb.ExchangeRequest {
		return &exchangepb.ExchangeRequest{GrantType: g.GrantType.String(), Audience: g.Audience, Scope: strings.Join(g.Scope, " ")}
	}
	if len(g.SubjectTokens) == 0 {
		return []*exchangepb.ExchangeRequest{base()}
	}
	out := make([]*exchangepb.ExchangeRequest, len(g.SubjectTokens))
	for i, tok := range g.SubjectTokens {
		m := base()
		m.SubjectToken, m.SubjectTokenType = tok, protocol.TokenTypeJWT.String()
		out[i] = m
	}
	return out
}
