package bearer

import (
	"errors"
	"testing"
)

func TestToken(t *testing.T) {
	tests := []struct {
		name      string
		values    []string
		want      string
		expectErr error
	}{
		{name: "baseline", values: []string{"Bearer a.b-c_d~e+f/g=="}, want: "a.b-c_d~e+f/g=="},
		{name: "scheme case", values: []string{"BEARER abc"}, want: "abc"},
		{name: "extra spaces", values: []string{"Bearer   abc"}, want: "abc"},
		{name: "none", expectErr: ErrMissing},
		{name: "other scheme", values: []string{"Basic abc"}, expectErr: ErrMissing},
		{name: "scheme prefix only", values: []string{"Bearerabc"}, expectErr: ErrMissing},
		{name: "two values", values: []string{"Bearer a", "Bearer b"}, expectErr: ErrMalformed},
		{name: "no token", values: []string{"Bearer "}, expectErr: ErrMalformed},
		{name: "only padding", values: []string{"Bearer =="}, expectErr: ErrMalformed},
		{name: "space inside", values: []string{"Bearer a b"}, expectErr: ErrMalformed},
		{name: "trailing space", values: []string{"Bearer abc "}, expectErr: ErrMalformed},
		{name: "quote", values: []string{`Bearer a"b`}, expectErr: ErrMalformed},
		{name: "padding inside", values: []string{"Bearer a=b"}, expectErr: ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Token(tt.values)
			if !errors.Is(err, tt.expectErr) || got != tt.want {
				t.Fatalf("Token(%q) = %q, %v; want %q, %v", tt.values, got, err, tt.want, tt.expectErr)
			}
		})
	}
}

func TestValidScope(t *testing.T) {
	for s, want := range map[string]bool{"read": true, "a:b/c": true, "": false, "a b": false, `a"b`: false, `a\b`: false, "é": false} {
		if got := ValidScope(s); got != want {
			t.Errorf("ValidScope(%q) = %v", s, got)
		}
	}
}
