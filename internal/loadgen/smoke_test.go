package loadgen

import (
	"context"
	"testing"

	"github.com/spiffe-sts/spiffe-sts/exchange/protocol"
	"github.com/spiffe-sts/spiffe-sts/internal/ststest"
)

// A short run of each transport and grant against an in-process server.
func TestSmokeInProcessServer(t *testing.T) {
	sts := ststest.Start(t, nil)
	svid := sts.WorkloadSVID(t, ststest.WorkloadID)
	target, err := ResolveTarget(context.Background(), sts.URL, "", false)
	if err != nil {
		t.Fatal(err)
	}
	clientCredentials := Grant{GrantType: protocol.GrantTypeClientCredentials, Audience: []string{ststest.APIAudience}}
	reused := Grant{GrantType: protocol.GrantTypeTokenExchange, Audience: []string{ststest.APIAudience},
		SubjectTokens: []string{sts.JWTSVID(t, ststest.WorkloadID)}}
	distinct := Grant{GrantType: protocol.GrantTypeTokenExchange, Audience: []string{ststest.APIAudience}}
	for range 3 {
		distinct.SubjectTokens = append(distinct.SubjectTokens, sts.JWTSVID(t, ststest.WorkloadID))
	}
	denied := Grant{GrantType: protocol.GrantTypeClientCredentials, Audience: []string{"spiffe://example.org/unknown"}}
	for _, tc := range []struct {
		name      string
		grant     Grant
		wantError string
	}{
		{name: "client_credentials", grant: clientCredentials},
		{name: "exchange reused", grant: reused},
		{name: "exchange distinct", grant: distinct},
		{name: "refused", grant: denied, wantError: "invalid_target"},
	} {
		for _, transport := range []string{"http", "http2", "grpc"} {
			t.Run(tc.name+"/"+transport, func(t *testing.T) {
				var do DoFunc
				switch transport {
				case "grpc":
					c, err := NewGRPC(target, sts.TLSConfig(svid), 2, tc.grant)
					if err != nil {
						t.Fatal(err)
					}
					defer c.Close()
					do = c.Do
				default:
					c := NewHTTP(target, sts.TLSConfig(svid), 2, tc.grant, transport == "http2")
					defer c.Close()
					do = c.Do
				}
				res, err := Run(context.Background(), Config{Connections: 2, Requests: 6}, do)
				if err != nil {
					t.Fatal(err)
				}
				if res.Requests != 6 {
					t.Fatalf("requests %d, want 6", res.Requests)
				}
				if tc.wantError == "" && res.OK != 6 {
					t.Errorf("ok %d of 6, errors %v", res.OK, res.Errors)
				}
				if tc.wantError != "" && (res.Errors[tc.wantError] != 6 || len(res.Errors) != 1) {
					t.Errorf("errors %v, want %s:6", res.Errors, tc.wantError)
				}
			})
		}
	}
}
