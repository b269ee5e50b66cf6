package exchange

import (
	"encoding/json"
	"errors"
	"net/url"
	"reflect"
	"slices"
	"testing"

	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
)

// FuzzParseJSON checks that the JSON body parser never panics, refuses
// with invalid_request only, and that what it accepts is what
// encoding/json reads from the same body and parses the same again as a
// form.
func FuzzParseJSON(f *testing.F) {
	for _, s := range []string{
		`{"grant_type":"urn:ietf:params:oauth:grant-type:token-exchange","audience":"a","scope":"read","subject_token":"t","subject_token_type":"urn:ietf:params:oauth:token-type:jwt"}`,
		`{"grant_type":"client_credentials","audience":["a","b"],"resource":"https://r","impersonate":true}`,
		`{"actor_token":"x","actor_token_type":"urn:ietf:params:oauth:token-type:access_token","requested_token_type":"urn:ietf:params:oauth:token-type:access_token","client_id":"c"}`,
		`{"scope":"a","scope":"b"}`, `{"audience":"a","audience":["b"]}`, `{"x":{"y":[1,2]},"x":null}`,
		`{"scope":1}`, `{"impersonate":"false"}`, `{"client_secret":"s"}`, `{"scope":"\u00e9\ud800"}`,
		`[]`, `{} {}`, `{"a":`, `{"audience":[null]}`, "{\"scope\":\"\xff\"}", `  {"grant_type" : "client_credentials" }  `,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := parseJSON(body)
		if err != nil {
			if !errors.Is(err, protocol.ErrInvalidRequest) {
				t.Fatalf("error %v is not invalid_request", err)
			}
			return
		}
		var members map[string]any
		if err := json.Unmarshal(body, &members); err != nil {
			t.Fatalf("accepted a body encoding/json refuses: %v", err)
		}
		// A null member reads as "", which is omitted (RFC 6749 §3.2).
		str := func(name string) string { s, _ := members[name].(string); return s }
		for name, got := range map[string]string{
			protocol.ParamGrantType: string(req.GrantType), protocol.ParamClientID: req.ClientID, protocol.ParamScope: req.Scope,
			protocol.ParamSubjectToken: req.SubjectToken, protocol.ParamSubjectTokenType: string(req.SubjectTokenType),
			protocol.ParamActorToken: req.ActorToken, protocol.ParamActorTokenType: string(req.ActorTokenType),
			protocol.ParamRequestedTokenType: string(req.RequestedTokenType),
		} {
			if want := str(name); got != want {
				t.Fatalf("%s = %q, encoding/json says %q", name, got, want)
			}
		}
		if want := members[protocol.ParamImpersonate] == true || str(protocol.ParamImpersonate) == "true"; req.Impersonate != want {
			t.Fatalf("impersonate = %v, encoding/json says %v", req.Impersonate, members[protocol.ParamImpersonate])
		}
		for name, got := range map[string][]string{protocol.ParamAudience: req.Audience, protocol.ParamResource: req.Resource} {
			var want []string
			switch v := members[name].(type) {
			case string:
				want = []string{v}
			case []any:
				for _, e := range v {
					s, _ := e.(string) // null reads as "", omitted
					want = append(want, s)
				}
			}
			want = slices.DeleteFunc(want, func(v string) bool { return v == "" })
			if !slices.Equal(got, want) {
				t.Fatalf("%s = %q, encoding/json says %q", name, got, want)
			}
		}
		// The same request sent as a form parses to the same Request.
		again, err := parseForm(formOf(req))
		if err != nil || !reflect.DeepEqual(again, req) {
			t.Fatalf("as a form: %+v, %v; from JSON: %+v", again, err, req)
		}
	})
}

// formOf encodes req as the application/x-www-form-urlencoded body that
// parses to it.
func formOf(req Request) string {
	v := url.Values{}
	add := func(name, value string) {
		if value != "" {
			v.Add(name, value)
		}
	}
	add(protocol.ParamGrantType, string(req.GrantType))
	add(protocol.ParamClientID, req.ClientID)
	add(protocol.ParamScope, req.Scope)
	add(protocol.ParamSubjectToken, req.SubjectToken)
	add(protocol.ParamSubjectTokenType, string(req.SubjectTokenType))
	add(protocol.ParamActorToken, req.ActorToken)
	add(protocol.ParamActorTokenType, string(req.ActorTokenType))
	add(protocol.ParamRequestedTokenType, string(req.RequestedTokenType))
	add(req.otherClientAuth, "x")
	if req.Impersonate {
		add(protocol.ParamImpersonate, "true")
	}
	for _, a := range req.Audience {
		add(protocol.ParamAudience, a)
	}
	for _, r := range req.Resource {
		add(protocol.ParamResource, r)
	}
	return v.Encode()
}

// FuzzParseIntrospectionForm checks that the introspection body parser
// never panics, refuses with invalid_request only, and accepts only a
// body holding exactly one non-empty token parameter (RFC 7662 §2.1).
func FuzzParseIntrospectionForm(f *testing.F) {
	for _, s := range []string{
		"token=eyJhbGciOiJFUzI1NiJ9.e30.c2ln", "token=a&token_type_hint=access_token", "token=a&token=b",
		"token=", "token_type_hint=x", "token=%zz", "a=b;token=c", "token=a+b%2Bc&&", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		token, err := parseIntrospectionForm(body)
		if err != nil {
			if !errors.Is(err, protocol.ErrInvalidRequest) {
				t.Fatalf("error %v is not invalid_request", err)
			}
			return
		}
		values, stdErr := url.ParseQuery(body)
		if stdErr != nil || token == "" || !slices.Equal(values["token"], []string{token}) {
			t.Fatalf("accepted token %q of %q (net/url: %q, %v)", token, body, values["token"], stdErr)
		}
	})
}
