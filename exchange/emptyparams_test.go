package exchange_test

import (
	"context"
	"encoding/json"
	"net/url"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/status"

	"github.com/spiffe-sts/spiffe-sts/exchange/exchangepb"
	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
	"github.com/spiffe-sts/spiffe-sts/internal/ststest"
)

// param is one parameter as sent, in order; a list of them can repeat a
// name, which url.Values and a Go map cannot express in JSON.
type param struct{ key, value string }

func formBody(params []param) string {
	var b strings.Builder
	for i, p := range params {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(url.QueryEscape(p.key) + "=" + url.QueryEscape(p.value))
	}
	return b.String()
}

// jsonBody writes the parameters as string members, repeating members as
// given, except audience and resource: sent more than once, they are one
// array member.
func jsonBody(t *testing.T, params []param) string {
	type member struct {
		key   string
		value any
	}
	var members []member
	lists := map[string]int{} // index in members of an audience or resource
	for _, p := range params {
		if p.key != protocol.ParamAudience && p.key != protocol.ParamResource {
			members = append(members, member{p.key, p.value})
			continue
		}
		i, ok := lists[p.key]
		switch {
		case !ok:
			lists[p.key] = len(members)
			members = append(members, member{p.key, p.value})
		default:
			if one, isOne := members[i].value.(string); isOne {
				members[i].value = []string{one}
			}
			members[i].value = append(members[i].value.([]string), p.value)
		}
	}
	var b strings.Builder
	b.WriteByte('{')
	for i, m := range members {
		if i > 0 {
			b.WriteByte(',')
		}
		k, err := json.Marshal(m.key)
		if err != nil {
			t.Fatal(err)
		}
		v, err := json.Marshal(m.value)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	return b.String()
}

// protoRequest is the gRPC message with the parameters; a message cannot
// repeat a single-valued field, so only audience and resource repeat.
func protoRequest(params []param) *exchangepb.ExchangeRequest {
	in := &exchangepb.ExchangeRequest{}
	for _, p := range params {
		switch p.key {
		case protocol.ParamGrantType:
			in.GrantType = p.value
		case protocol.ParamClientID:
			in.ClientId = p.value
		case protocol.ParamScope:
			in.Scope = p.value
		case protocol.ParamAudience:
			in.Audience = append(in.Audience, p.value)
		case protocol.ParamResource:
			in.Resource = append(in.Resource, p.value)
		case protocol.ParamSubjectToken:
			in.SubjectToken = p.value
		case protocol.ParamSubjectTokenType:
			in.SubjectTokenType = p.value
		case protocol.ParamActorToken:
			in.ActorToken = p.value
		case protocol.ParamActorTokenType:
			in.ActorTokenType = p.value
		case protocol.ParamRequestedTokenType:
			in.RequestedTokenType = p.value
		case protocol.ParamImpersonate:
			in.Impersonate = p.value == "true"
		}
	}
	return in
}

// outcome is what a token request got: an error, or a token whose
// audience and scope are kept.
type outcome struct {
	code, desc string
	respScope  string
	audience   []string
	scope      string
}

// TestEmptyParameters checks RFC 6749 §3.2, "Parameters sent without a
// value MUST be treated as if they were omitted from the request", for
// every parameter in form bodies, JSON bodies and the gRPC API: from a
// baseline that sends every parameter, sending one empty has exactly the
// outcome of leaving it out, and sending it twice, one copy empty, is
// refused for a single-valued parameter; an empty audience or resource
// value is as if that value were not sent.
func TestEmptyParameters(t *testing.T) {
	f := newFixture(t, nil)
	ctx := context.Background()
	baseline := []param{
		{protocol.ParamGrantType, protocol.GrantTypeTokenExchange.String()},
		{protocol.ParamClientID, workloadID},
		{protocol.ParamScope, "read"},
		{protocol.ParamAudience, apiAud},
		{protocol.ParamResource, ststest.OrdersResource},
		{protocol.ParamSubjectToken, f.jwtSVID(t, workloadID)},
		{protocol.ParamSubjectTokenType, protocol.TokenTypeJWT.String()},
		{protocol.ParamActorToken, f.jwtSVID(t, workloadID)},
		{protocol.ParamActorTokenType, protocol.TokenTypeJWT.String()},
		{protocol.ParamRequestedTokenType, protocol.TokenTypeAccessToken.String()},
	}
	issued := outcome{audience: []string{apiAud, ststest.OrdersResource}, scope: "read"}
	refused := func(desc string) outcome { return outcome{code: "invalid_request", desc: desc} }

	// absent is the outcome without the parameter, which the empty one
	// must equal.
	tests := []struct {
		key    string
		absent outcome
		// multiValued parameters may repeat; an empty copy is dropped.
		multiValued bool
	}{
		{key: protocol.ParamGrantType, absent: refused("grant_type is required")},
		{key: protocol.ParamClientID, absent: issued},
		{key: protocol.ParamScope, absent: outcome{audience: issued.audience, scope: "read", respScope: "read"}},
		{key: protocol.ParamAudience, absent: outcome{audience: []string{ststest.OrdersResource}, scope: "read"}, multiValued: true},
		{key: protocol.ParamResource, absent: outcome{audience: []string{apiAud}, scope: "read"}, multiValued: true},
		{key: protocol.ParamSubjectToken, absent: refused("subject_token is required")},
		{key: protocol.ParamSubjectTokenType, absent: refused("subject_token_type is required")},
		{key: protocol.ParamActorToken, absent: refused("actor_token and actor_token_type go together")},
		{key: protocol.ParamActorTokenType, absent: refused("actor_token and actor_token_type go together")},
		{key: protocol.ParamRequestedTokenType, absent: issued},
		{key: protocol.ParamImpersonate, absent: issued},
	}

	apis := []struct {
		name string
		// repeats is false where the API cannot send a single-valued
		// parameter twice.
		repeats bool
		send    func(t *testing.T, params []param) outcome
	}{
		{name: "form", repeats: true, send: func(t *testing.T, params []param) outcome {
			return f.httpOutcome(t, formType, formBody(params))
		}},
		{name: "JSON", repeats: true, send: func(t *testing.T, params []param) outcome {
			return f.httpOutcome(t, "application/json", jsonBody(t, params))
		}},
		{name: "gRPC", send: func(t *testing.T, params []param) outcome {
			resp, err := f.GRPCClient(t, f.svid(t, workloadID)).Exchange(ctx, protoRequest(params))
			if err != nil {
				oauthErr, ok := protocol.ErrorFromStatus(status.Convert(err))
				if !ok {
					t.Fatalf("gRPC error %v carries no OAuth error", err)
				}
				return outcome{code: oauthErr.Code, desc: oauthErr.Description}
			}
			return f.tokenOutcome(t, resp.GetAccessToken(), resp.GetScope())
		}},
	}

	for _, api := range apis {
		t.Run(api.name+"/baseline", func(t *testing.T) {
			if got := api.send(t, baseline); !equalOutcome(got, issued) {
				t.Fatalf("baseline got %+v, want %+v", got, issued)
			}
		})
		for _, tt := range tests {
			variants := []struct {
				name   string
				params []param
				expect outcome
			}{
				{name: "absent", params: without(baseline, tt.key), expect: tt.absent},
				{name: "empty", params: emptied(baseline, tt.key), expect: tt.absent},
			}
			if api.repeats || tt.multiValued {
				repeated := refused("parameter " + tt.key + " is repeated")
				if tt.multiValued {
					repeated = issued // the empty copy is dropped
				}
				if tt.key == protocol.ParamImpersonate {
					// Not in the baseline: sent true, it asks to impersonate
					// the caller itself.
					repeated.desc = "parameter impersonate is repeated"
				}
				variants = append(variants,
					struct {
						name   string
						params []param
						expect outcome
					}{name: "repeated, empty copy last", params: repeatedEmpty(baseline, tt.key, false), expect: repeated},
					struct {
						name   string
						params []param
						expect outcome
					}{name: "repeated, empty copy first", params: repeatedEmpty(baseline, tt.key, true), expect: repeated},
				)
			}
			for _, v := range variants {
				t.Run(api.name+"/"+tt.key+"/"+v.name, func(t *testing.T) {
					if got := api.send(t, v.params); !equalOutcome(got, v.expect) {
						t.Errorf("got %+v, want %+v", got, v.expect)
					}
				})
			}
		}
	}
}

func (f *fixture) httpOutcome(t *testing.T, contentType, body string) outcome {
	t.Helper()
	resp, raw := f.Post(t, f.client(f.svid(t, workloadID)), contentType, body)
	var r struct {
		protocol.Error
		protocol.Response
	}
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatalf("response is not JSON: %q", raw)
	}
	if r.Code != "" {
		if resp.StatusCode != r.HTTPStatus() {
			t.Errorf("HTTP status %d for %s", resp.StatusCode, r.Code)
		}
		return outcome{code: r.Code, desc: r.Description}
	}
	return f.tokenOutcome(t, r.AccessToken, r.Scope)
}

// tokenOutcome verifies token for the caller's certificate and keeps its
// audience and scope.
func (f *fixture) tokenOutcome(t *testing.T, token, respScope string) outcome {
	t.Helper()
	for _, aud := range []string{apiAud, ststest.OrdersResource} {
		claims, err := f.verifier(aud).Verify(context.Background(), token, f.svid(t, workloadID).Certificates[0])
		if err == nil {
			return outcome{respScope: respScope, audience: claims.Audience, scope: claims.Scope}
		}
	}
	t.Fatal("the issued token does not verify for the caller")
	return outcome{}
}

func equalOutcome(a, b outcome) bool {
	return a.code == b.code && a.desc == b.desc && a.respScope == b.respScope && a.scope == b.scope && slices.Equal(a.audience, b.audience)
}

func without(params []param, key string) []param {
	return slices.DeleteFunc(slices.Clone(params), func(p param) bool { return p.key == key })
}

// emptied sends key with an empty value in place of its value, or in
// addition for a parameter the baseline does not send.
func emptied(params []param, key string) []param {
	out := slices.Clone(params)
	for i := range out {
		if out[i].key == key {
			out[i].value = ""
			return out
		}
	}
	return append(out, param{key, ""})
}

// repeatedEmpty sends key twice, its value (true for impersonate) and an
// empty copy, the empty one first or last.
func repeatedEmpty(params []param, key string, emptyFirst bool) []param {
	value := "true"
	out := without(params, key)
	for _, p := range params {
		if p.key == key {
			value = p.value
		}
	}
	if emptyFirst {
		return append(out, param{key, ""}, param{key, value})
	}
	return append(out, param{key, value}, param{key, ""})
}
