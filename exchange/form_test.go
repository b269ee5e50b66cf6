package exchange

import (
	"errors"
	"mime"
	"net/url"
	"reflect"
	"slices"
	"testing"

	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
)

func TestParseForm(t *testing.T) {
	req, err := parseForm("grant_type=client_credentials&audience=a&audience=b+c&resource=https%3A%2F%2Fx&unknown=1&&scope=read%20write")
	if err != nil {
		t.Fatal(err)
	}
	if string(req.GrantType) != "client_credentials" || req.Scope != "read write" ||
		!slices.Equal(req.Audience, []string{"a", "b c"}) || !slices.Equal(req.Resource, []string{"https://x"}) {
		t.Fatalf("parsed %+v", req)
	}
}

// FuzzParseForm checks that the parser never panics, refuses what it must,
// and agrees with net/url on every well-formed body it accepts.
func FuzzParseForm(f *testing.F) {
	f.Add("grant_type=client_credentials&audience=a&audience=b")
	f.Add("subject_token=x&subject_token=y")
	f.Add("scope=%zz")
	f.Add("a=b;c=d&scope=")
	f.Add("audience=&audience=a&scope=&client_id=")
	f.Fuzz(func(t *testing.T, body string) {
		req, err := parseForm(body)
		if err != nil {
			if !errors.Is(err, protocol.ErrInvalidRequest) {
				t.Fatalf("error %v is not invalid_request", err)
			}
			return
		}
		values, stdErr := url.ParseQuery(body)
		if stdErr != nil {
			return // net/url refuses some bodies (';') that are unambiguous here
		}
		for name, got := range map[string]string{
			protocol.ParamGrantType: string(req.GrantType), protocol.ParamScope: req.Scope, protocol.ParamSubjectToken: req.SubjectToken,
			protocol.ParamClientID: req.ClientID, protocol.ParamRequestedTokenType: string(req.RequestedTokenType),
		} {
			if len(values[name]) > 1 {
				t.Fatalf("%s repeated but accepted", name)
			}
			if values.Get(name) != got {
				t.Fatalf("%s = %q, net/url says %q", name, got, values.Get(name))
			}
		}
		// Empty values are omitted (RFC 6749 §3.2).
		audience := slices.DeleteFunc(values[protocol.ParamAudience], func(v string) bool { return v == "" })
		if !slices.Equal(audience, req.Audience) && len(audience)+len(req.Audience) > 0 {
			t.Fatalf("audience = %q, net/url says %q", req.Audience, audience)
		}
	})
}

func TestParseJSON(t *testing.T) {
	tests := []struct {
		name      string
		body      string
		expectErr string
		check     func(Request) bool
	}{
		{name: "credentials/sts shape", body: `{"grant_type":"urn:ietf:params:oauth:grant-type:token-exchange","audience":"a","scope":"read","subject_token":"t","subject_token_type":"urn:ietf:params:oauth:token-type:jwt"}`,
			check: func(r Request) bool {
				return r.GrantType == protocol.GrantTypeTokenExchange && slices.Equal(r.Audience, []string{"a"}) && r.SubjectToken == "t" && r.Scope == "read"
			}},
		{name: "audience array", body: `{"audience":["a","b"],"resource":"https://r"}`, check: func(r Request) bool {
			return slices.Equal(r.Audience, []string{"a", "b"}) && slices.Equal(r.Resource, []string{"https://r"})
		}},
		{name: "unknown members ignored", body: `{"grant_type":"client_credentials","x":{"y":1}}`, check: func(r Request) bool { return r.GrantType == protocol.GrantTypeClientCredentials }},
		{name: "impersonate as a boolean", body: `{"impersonate":true}`, check: func(r Request) bool { return r.Impersonate }},
		{name: "repeated member", body: `{"scope":"a","scope":"b"}`, expectErr: "exchange: invalid_request: parameter scope is repeated"},
		{name: "repeated member, one empty", body: `{"scope":"","scope":"b"}`, expectErr: "exchange: invalid_request: parameter scope is repeated"},
		{name: "repeated audience member", body: `{"audience":"a","audience":["b"]}`, expectErr: "exchange: invalid_request: parameter audience is repeated"},
		{name: "repeated unknown member ignored", body: `{"x":1,"x":2,"scope":"a"}`, check: func(r Request) bool { return r.Scope == "a" }},
		{name: "empty audience values dropped", body: `{"audience":["","a",""],"resource":""}`, check: func(r Request) bool {
			return slices.Equal(r.Audience, []string{"a"}) && r.Resource == nil
		}},
		{name: "empty impersonate as omitted", body: `{"impersonate":""}`, check: func(r Request) bool { return !r.Impersonate }},
		{name: "number", body: `{"scope":1}`, expectErr: `exchange: invalid_request: parameter "scope" must be a string`},
		{name: "array for a single-valued parameter", body: `{"scope":["a"]}`, expectErr: `exchange: invalid_request: parameter "scope" must be a string`},
		{name: "empty value as omitted", body: `{"scope":"","grant_type":"client_credentials"}`, check: func(r Request) bool {
			return reflect.DeepEqual(r, Request{GrantType: protocol.GrantTypeClientCredentials})
		}},
		{name: "not an object", body: `["a"]`, expectErr: "exchange: invalid_request: the JSON body must be an object of string parameters"},
		{name: "trailing data", body: `{} {}`, expectErr: "exchange: invalid_request: the JSON body must be an object of string parameters"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := parseJSON([]byte(tt.body))
			if tt.expectErr != "" {
				if err == nil || err.Error() != tt.expectErr {
					t.Fatalf("err = %v, want %s", err, tt.expectErr)
				}
				return
			}
			if err != nil || !tt.check(req) {
				t.Fatalf("parsed %+v, err %v", req, err)
			}
		})
	}
}

// TestParseEmptyParameters checks at the parser, for every parameter and
// every body, that an empty value is the parameter omitted (RFC 6749
// §3.2) and that a repeated single-valued one is refused even when a copy
// is empty. TestEmptyParameters checks the same through the server.
func TestParseEmptyParameters(t *testing.T) {
	singleValued := []string{
		protocol.ParamGrantType, protocol.ParamClientID, protocol.ParamScope, protocol.ParamSubjectToken,
		protocol.ParamSubjectTokenType, protocol.ParamActorToken, protocol.ParamActorTokenType,
		protocol.ParamRequestedTokenType, protocol.ParamImpersonate,
	}
	for _, key := range append(singleValued, protocol.ParamAudience, protocol.ParamResource,
		protocol.ParamClientSecret, protocol.ParamClientAssertion, protocol.ParamClientAssertionType) {
		t.Run(key, func(t *testing.T) {
			for name, parse := range map[string]func() (Request, error){
				"form": func() (Request, error) { return parseForm(key + "=") },
				"JSON": func() (Request, error) { return parseJSON([]byte(`{"` + key + `":""}`)) },
			} {
				got, err := parse()
				if err != nil || !reflect.DeepEqual(got, Request{}) {
					t.Errorf("%s: empty %s parsed as %+v, %v; want as omitted", name, key, got, err)
				}
			}
		})
	}
	for _, key := range singleValued {
		t.Run(key+"/repeated", func(t *testing.T) {
			want := "exchange: invalid_request: parameter " + key + " is repeated"
			for _, body := range []string{key + "=&" + key + "=true", key + "=true&" + key + "=", key + "=&" + key + "="} {
				if _, err := parseForm(body); err == nil || err.Error() != want {
					t.Errorf("form %q: err = %v, want %s", body, err, want)
				}
			}
			body := `{"` + key + `":"","` + key + `":"true"}`
			if _, err := parseJSON([]byte(body)); err == nil || err.Error() != want {
				t.Errorf("JSON %s: err = %v, want %s", body, err, want)
			}
		})
	}
}

// TestRequestMediaType checks that the form type's fast path answers as
// mime.ParseMediaType does, for the exact value and for its variants.
func TestRequestMediaType(t *testing.T) {
	for _, ct := range []string{
		"application/x-www-form-urlencoded",
		"application/x-www-form-urlencoded; charset=utf-8",
		"Application/X-WWW-Form-Urlencoded",
		"application/json; charset=utf-8",
		"application/x-www-form-urlencoded;",
		"text/plain",
		"",
		"application/x-www-form-urlencoded; charset=\"",
	} {
		want, _, wantErr := mime.ParseMediaType(ct)
		got, err := requestMediaType(ct)
		if got != want || (err == nil) != (wantErr == nil) {
			t.Errorf("requestMediaType(%q) = %q, %v; mime.ParseMediaType: %q, %v", ct, got, err, want, wantErr)
		}
	}
}

// TestUnescapeValue checks that the protocol's URNs decode, from their
// usual form encoding and any other, as url.QueryUnescape decodes them.
func TestUnescapeValue(t *testing.T) {
	for _, raw := range []string{
		"urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange",
		"urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt",
		"urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token",
		"urn%3aietf%3aparams%3aoauth%3atoken-type%3ajwt",
		"urn:ietf:params:oauth:token-type:jwt",
		"urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt%3A",
		"urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajw",
		"urn%3A%zz",
		"https%3A%2F%2Fapi.example.org+x",
		"",
	} {
		want, wantErr := url.QueryUnescape(raw)
		got, err := unescapeValue(raw)
		if got != want || (err == nil) != (wantErr == nil) {
			t.Errorf("unescapeValue(%q) = %q, %v; url.QueryUnescape: %q, %v", raw, got, err, want, wantErr)
		}
	}
	if allocs := testing.AllocsPerRun(10, func() {
		_, _ = unescapeValue("urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange")
	}); allocs != 0 {
		t.Errorf("unescapeValue of the token exchange grant type: %v allocations, want none", allocs)
	}
}
