package exchange

import (
	"errors"
	"net/url"
	"slices"
	"testing"
)

func TestParseForm(t *testing.T) {
	req, err := parseForm("grant_type=client_credentials&audience=a&audience=b+c&resource=https%3A%2F%2Fx&unknown=1&&scope=read%20write")
	if err != nil {
		t.Fatal(err)
	}
	if req.grantType != "client_credentials" || req.scope != "read write" ||
		!slices.Equal(req.audience, []string{"a", "b c"}) || !slices.Equal(req.resource, []string{"https://x"}) {
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
	f.Fuzz(func(t *testing.T, body string) {
		req, err := parseForm(body)
		if err != nil {
			if !errors.Is(err, ErrInvalidRequest) {
				t.Fatalf("error %v is not invalid_request", err)
			}
			return
		}
		values, stdErr := url.ParseQuery(body)
		if stdErr != nil {
			return // net/url refuses some bodies (';') that are unambiguous here
		}
		for name, got := range map[string]string{
			paramGrantType: req.grantType, paramScope: req.scope, paramSubjectToken: req.subjectToken,
			paramClientID: req.clientID, paramRequestedTokenType: req.requestedTokenType,
		} {
			if len(values[name]) > 1 {
				t.Fatalf("%s repeated but accepted", name)
			}
			if values.Get(name) != got {
				t.Fatalf("%s = %q, net/url says %q", name, got, values.Get(name))
			}
		}
		if !slices.Equal(values[paramAudience], req.audience) && len(values[paramAudience])+len(req.audience) > 0 {
			t.Fatalf("audience = %q, net/url says %q", req.audience, values[paramAudience])
		}
	})
}
