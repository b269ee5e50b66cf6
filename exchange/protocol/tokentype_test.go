package protocol_test

import (
	"encoding/json"
	"testing"

	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
)

func TestParseTokenType(t *testing.T) {
	tests := []struct {
		in        string
		expect    protocol.TokenType
		expectErr string
	}{
		{in: "urn:ietf:params:oauth:token-type:jwt", expect: protocol.TokenTypeJWT},
		{in: "urn:ietf:params:oauth:token-type:access_token", expect: protocol.TokenTypeAccessToken},
		{in: "", expectErr: "protocol: empty token type"},
		{in: "urn:ietf:params:oauth:token-type:id_token", expectErr: `protocol: unsupported token type "urn:ietf:params:oauth:token-type:id_token"`},
		{in: "jwt", expectErr: `protocol: unsupported token type "jwt"`},
	}
	for _, tt := range tests {
		got, err := protocol.ParseTokenType(tt.in)
		switch {
		case tt.expectErr != "" && (err == nil || err.Error() != tt.expectErr):
			t.Errorf("ParseTokenType(%q) error = %v, want %s", tt.in, err, tt.expectErr)
		case tt.expectErr == "" && (err != nil || got != tt.expect):
			t.Errorf("ParseTokenType(%q) = %q, %v; want %q", tt.in, got, err, tt.expect)
		}
	}
}

func TestRequireTokenTypePanics(t *testing.T) {
	if got := protocol.RequireTokenType("urn:ietf:params:oauth:token-type:jwt"); got != protocol.TokenTypeJWT {
		t.Fatalf("RequireTokenType = %q", got)
	}
	defer func() {
		if recover() == nil {
			t.Error("RequireTokenType(\"bogus\") did not panic")
		}
	}()
	protocol.RequireTokenType("bogus")
}

func TestIdentifiers(t *testing.T) {
	var zeroToken protocol.TokenType
	var zeroGrant protocol.GrantType
	if !zeroToken.IsZero() || !zeroGrant.IsZero() || protocol.TokenTypeJWT.IsZero() || protocol.GrantTypeTokenExchange.IsZero() {
		t.Error("IsZero is wrong")
	}
	if protocol.TokenTypeJWT.String() != "urn:ietf:params:oauth:token-type:jwt" ||
		protocol.GrantTypeClientCredentials.String() != "client_credentials" {
		t.Error("String is wrong")
	}
	out, err := json.Marshal(map[string]any{"t": protocol.TokenTypeAccessToken, "g": protocol.GrantTypeTokenExchange})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"g":"urn:ietf:params:oauth:grant-type:token-exchange","t":"urn:ietf:params:oauth:token-type:access_token"}`; string(out) != want {
		t.Errorf("JSON = %s, want %s", out, want)
	}
}
