package accesstoken_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/spiffe-sts/spiffe-sts/accesstoken"
)

func TestRefusalOf(t *testing.T) {
	tests := []struct {
		name   string
		err    error
		expect accesstoken.Refusal
	}{
		{name: "accepted", err: nil, expect: ""},
		{name: "not bound", err: accesstoken.ErrNotBound, expect: accesstoken.RefusalBindingMismatch},
		{name: "not bound, wrapped", err: fmt.Errorf("x: %w", accesstoken.ErrNotBound), expect: accesstoken.RefusalBindingMismatch},
		{name: "signature", err: accesstoken.ErrSignature, expect: accesstoken.RefusalBadToken},
		{name: "expired", err: &accesstoken.ExpiredError{}, expect: accesstoken.RefusalBadToken},
		{name: "audience", err: accesstoken.ErrAudience, expect: accesstoken.RefusalBadToken},
		{name: "no certificate", err: accesstoken.ErrNoCertificate, expect: accesstoken.RefusalBadToken},
		{name: "anything else", err: errors.New("boom"), expect: accesstoken.RefusalBadToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := accesstoken.RefusalOf(tt.err); got != tt.expect {
				t.Fatalf("RefusalOf = %q, want %q", got, tt.expect)
			}
		})
	}
}

func TestRefusalErrorInfo(t *testing.T) {
	for _, r := range []accesstoken.Refusal{accesstoken.RefusalBadToken, accesstoken.RefusalBindingMismatch} {
		if got := accesstoken.RefusalFromErrorInfo(accesstoken.ErrorInfoDomain, r.ErrorInfoReason()); got != r {
			t.Errorf("round trip of %q = %q", r, got)
		}
	}
	if got := accesstoken.RefusalBindingMismatch.ErrorInfoReason(); got != "BINDING_MISMATCH" {
		t.Errorf("reason = %q", got)
	}
	if got := accesstoken.RefusalFromErrorInfo("spiffe-sts", "BINDING_MISMATCH"); got != "" {
		t.Errorf("another domain gave %q", got)
	}
	if got := accesstoken.RefusalFromErrorInfo(accesstoken.ErrorInfoDomain, "SOMETHING"); got != "" {
		t.Errorf("an unknown reason gave %q", got)
	}
}

func TestParseChallenge(t *testing.T) {
	mismatch := `Bearer error="invalid_token", error_description="the token is not bound to the client certificate", refusal="binding_mismatch"`
	baseline := accesstoken.Challenge{
		Error:       "invalid_token",
		Description: "the token is not bound to the client certificate",
		Refusal:     accesstoken.RefusalBindingMismatch,
	}
	tests := []struct {
		name     string
		values   []string
		expect   func(*accesstoken.Challenge)
		expectOK bool
	}{
		{name: "binding mismatch", values: []string{mismatch}, expectOK: true},
		{name: "bad token", values: []string{`Bearer error="invalid_token", error_description="the token has expired", refusal="bad_token"`},
			expect: func(c *accesstoken.Challenge) {
				c.Description, c.Refusal = "the token has expired", accesstoken.RefusalBadToken
			}, expectOK: true},
		{name: "bare scheme", values: []string{"Bearer"}, expect: func(c *accesstoken.Challenge) { *c = accesstoken.Challenge{} }, expectOK: true},
		{name: "scheme and names in any case, token values, spaces around =", values: []string{`bEaReR ERROR = invalid_token, Refusal=binding_mismatch`},
			expect: func(c *accesstoken.Challenge) { c.Description = "" }, expectOK: true},
		{name: "after another challenge in the same value", values: []string{`Basic realm="x, y", ` + mismatch}, expectOK: true},
		{name: "after a token68 challenge", values: []string{`Negotiate abc==, ` + mismatch}, expectOK: true},
		{name: "in a second header value", values: []string{`Basic realm="x"`, mismatch}, expectOK: true},
		{name: "the first Bearer challenge wins", values: []string{mismatch + `, Bearer error="invalid_token", refusal="bad_token"`}, expectOK: true},
		{name: "quoted-pair", values: []string{`Bearer error="invalid_token", error_description="a \"quoted\" \\ word", refusal="binding_mismatch"`},
			expect: func(c *accesstoken.Challenge) { c.Description = `a "quoted" \ word` }, expectOK: true},
		{name: "insufficient scope", values: []string{`Bearer error="insufficient_scope", scope="read write"`},
			expect: func(c *accesstoken.Challenge) {
				*c = accesstoken.Challenge{Error: "insufficient_scope", Scope: "read write"}
			}, expectOK: true},
		{name: "unknown parameter ignored", values: []string{`Bearer realm="api", ` + mismatch[len("Bearer "):]}, expectOK: true},
		{name: "no header", values: nil},
		{name: "no Bearer challenge", values: []string{`Basic realm="x"`}},
		{name: "repeated parameter", values: []string{mismatch + `, refusal="bad_token"`}},
		{name: "unterminated quote", values: []string{`Bearer error="invalid_token, refusal="binding_mismatch`}},
		{name: "missing value", values: []string{`Bearer error=, refusal="binding_mismatch"`}},
		{name: "garbage", values: []string{`Bearer "x"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			expect := baseline
			if tt.expect != nil {
				tt.expect(&expect)
			}
			got, ok := accesstoken.ParseChallenge(tt.values)
			if ok != tt.expectOK {
				t.Fatalf("ParseChallenge(%q) ok = %v, want %v (%+v)", tt.values, ok, tt.expectOK, got)
			}
			if ok && got != expect {
				t.Fatalf("ParseChallenge(%q) = %+v, want %+v", tt.values, got, expect)
			}
		})
	}
}

func FuzzParseChallenge(f *testing.F) {
	f.Add(`Bearer error="invalid_token", error_description="x", refusal="binding_mismatch"`)
	f.Add(`Basic realm="a, b", Negotiate abc==, Bearer`)
	f.Fuzz(func(t *testing.T, s string) {
		_, _ = accesstoken.ParseChallenge([]string{s})
	})
}
