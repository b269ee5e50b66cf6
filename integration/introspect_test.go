//go:build integration

package integration

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe-sts/spiffe-sts/exchange/exchangeclient"
	"github.com/spiffe-sts/spiffe-sts/integration/harness"
	"github.com/spiffe-sts/spiffe-sts/internal/testca"
)

// TestIntrospection has a resource server that cannot verify tokens
// itself introspect them (RFC 7662), on real SPIRE and the real binary.
// The resource server is a Python script with only the standard library
// and the X509-SVID of this test process, whose policy rule lists
// payments in introspect_audiences. It learns the claims, cnf and act
// chain of a delegated token for payments; a token for another audience,
// a garbled one and an expired one are {"active":false}; a caller
// without a valid X509-SVID is refused with invalid_client. Every
// introspection is in the audit trail, without the token.
func TestIntrospection(t *testing.T) {
	t.Parallel()
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Fatalf("python3 is needed for the non-Go resource server: %v", err)
	}
	e := newEnv(t, envOptions{})
	ctx := t.Context()
	idp, err := harness.StartOIDCIssuer(ctx, bin.oidcIssuer, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = idp.Stop() })
	wl := map[string]string{"frontend": e.workload("frontend", frontendID), "orders": e.workload("orders", ordersID)}
	dir := t.TempDir()
	auditPath := filepath.Join(dir, "audit.log")
	policy := corpIssuerHCL(idp) + fmt.Sprintf(`
audit {
  path = %q
}
policy %q {
  audiences = [%q]
  scopes    = ["orders.read"]
  delegation {
    issuers   = ["corp"]
    max_depth = 1
  }
}
policy %q {
  audiences = [%q]
  scopes    = ["orders.read"]
  delegation {
    issuers   = ["corp"]
    subjects  = [%q]
    max_depth = 2
  }
}
policy %q {
  audiences            = [%q]
  max_ttl              = "5s"
  introspect_audiences = [%q]
}
`, auditPath,
		frontendID, ordersID,
		ordersID, paymentsID, frontendID,
		clientID, paymentsID, paymentsID)
	s := e.startSTS(0, "", policy)

	save := func(name string, data []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	exchange := func(workload, subjectFile, subjectType, audience string) string {
		t.Helper()
		out, code := e.exchangeAs(t, s, wl[workload], subjectFile, subjectType, audience, "orders.read")
		if code != 0 {
			t.Fatalf("%s exchange: exit %d\n%s", workload, code, out)
		}
		return out
	}

	// 1. A delegated token: alice via frontend via orders, for payments.
	user, err := idp.IssueToken(ctx, "alice", []string{"spiffe-sts"}, "orders.read", "", 5*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t1 := exchange("frontend", save("user", []byte(user)), "jwt", ordersID)
	t2 := exchange("orders", save("t1", []byte(t1)), "access_token", paymentsID)

	// 2. The resource server's identity as files: this process's SVID.
	src := e.source()
	svid, err := src.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := svid.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := src.GetX509BundleForTrustDomain(e.spire.TrustDomain())
	if err != nil {
		t.Fatal(err)
	}
	bundlePEM, err := bundle.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	cert, key, bundleFile := save("svid.pem", certPEM), save("svid_key.pem", keyPEM), save("bundle.pem", bundlePEM)
	evil := testca.New(t, "evil.example").SVID(t, "spiffe://evil.example/ns/prod/sa/client", time.Hour)
	evilCertPEM, evilKeyPEM, err := evil.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	evilCert, evilKey := save("evil.pem", evilCertPEM), save("evil_key.pem", evilKeyPEM)

	script, err := filepath.Abs("testdata/introspect/introspect.py")
	if err != nil {
		t.Fatal(err)
	}
	calls := 0
	introspect := func(t *testing.T, cert, key, token string) (int, map[string]any) {
		t.Helper()
		calls++
		tokenFile := save("introspect-"+strconv.Itoa(calls), []byte(token))
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		out, err := exec.CommandContext(cctx, python, script, s.Addr, stsID, bundleFile, cert, key, tokenFile).CombinedOutput()
		if err != nil {
			t.Fatalf("introspect.py: %v\n%s", err, out)
		}
		status, body, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		code, err := strconv.Atoi(status)
		if err != nil {
			t.Fatalf("introspect.py output:\n%s", out)
		}
		var answer map[string]any
		if err := json.Unmarshal([]byte(body), &answer); err != nil {
			t.Fatalf("answer is not JSON: %v\n%s", err, body)
		}
		return code, answer
	}
	inactive := func(t *testing.T, token string) {
		t.Helper()
		code, answer := introspect(t, cert, key, token)
		if got := toJSON(t, answer); code != 200 || got != `{"active":false}` {
			t.Fatalf("got %d %s, want 200 {\"active\":false}", code, got)
		}
	}

	t.Run("a delegated token for an introspect_audiences audience: active, cnf and act chain", func(t *testing.T) {
		code, answer := introspect(t, cert, key, t2)
		if code != 200 || answer["active"] != true {
			t.Fatalf("got %d %v", code, answer)
		}
		claims := mustClaims(t, t2)
		want := map[string]any{
			"sub": "alice", "client_id": ordersID, "iss": s.url, "aud": paymentsID, "scope": "orders.read",
			"jti": claims.JWTID, "token_type": "Bearer",
			"cnf": map[string]any{"x5t#S256": claims.Confirmation.X5TS256},
			"act": map[string]any{"sub": ordersID, "act": map[string]any{"sub": frontendID}},
		}
		if claims.Confirmation.X5TS256 == "" {
			t.Fatal("the token has no cnf")
		}
		for k, v := range want {
			if toJSON(t, answer[k]) != toJSON(t, v) {
				t.Errorf("%s = %s, want %s", k, toJSON(t, answer[k]), toJSON(t, v))
			}
		}
	})
	t.Run("a token for another audience: inactive", func(t *testing.T) { inactive(t, t1) })
	t.Run("a garbled token: inactive", func(t *testing.T) {
		inactive(t, t2[:len(t2)-6]+"AAAAAA")
		inactive(t, "not-a-token")
	})
	t.Run("an expired token: inactive", func(t *testing.T) {
		c := e.client(s, src)
		tok, err := c.Exchange(ctx, exchangeclient.Request{Audience: []string{paymentsID}})
		if err != nil {
			t.Fatal(err)
		}
		if code, answer := introspect(t, cert, key, tok.AccessToken); code != 200 || answer["active"] != true {
			t.Fatalf("while valid: %d %v", code, answer)
		}
		// max_ttl is 5s: poll, with a generous deadline, until it expires.
		deadline := time.Now().Add(time.Minute)
		for {
			code, answer := introspect(t, cert, key, tok.AccessToken)
			if code == 200 && toJSON(t, answer) == `{"active":false}` {
				break
			}
			if code != 200 || answer["active"] != true || time.Now().After(deadline) {
				t.Fatalf("got %d %v, want it inactive once expired (exp %v)", code, answer, tok.Expiry)
			}
			time.Sleep(500 * time.Millisecond)
		}
	})
	t.Run("callers without a valid X509-SVID are refused", func(t *testing.T) {
		for _, tc := range []struct{ name, cert, key string }{
			{"no client certificate", "-", "-"},
			{"a certificate of an untrusted trust domain", evilCert, evilKey},
		} {
			code, answer := introspect(t, tc.cert, tc.key, t2)
			if code != 401 || answer["error"] != "invalid_client" || answer["active"] != nil {
				t.Errorf("%s: got %d %v, want 401 invalid_client", tc.name, code, answer)
			}
		}
	})

	// 3. The audit trail has every introspection, never a token.
	raw, err := os.ReadFile(auditPath)
	if err != nil {
		t.Fatal(err)
	}
	outcomes := map[string]int{}
	sc := bufio.NewScanner(strings.NewReader(string(raw)))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var rec struct{ Operation, Outcome, Caller, JTI, KID, Error string }
		if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
			t.Fatal(err)
		}
		if rec.Operation != "introspect" {
			continue
		}
		outcomes[rec.Outcome]++
		if rec.Outcome != "refused" && (rec.Caller != clientID) {
			t.Errorf("introspection record of caller %q, want %s: %s", rec.Caller, clientID, sc.Text())
		}
	}
	if n := outcomes["active"] + outcomes["inactive"] + outcomes["refused"]; n != calls || outcomes["active"] < 2 || outcomes["inactive"] < 4 || outcomes["refused"] != 2 {
		t.Errorf("introspection records by outcome %v, want %d in all (≥2 active, ≥4 inactive, 2 refused)", outcomes, calls)
	}
	for _, tok := range []string{t1, t2} {
		for _, part := range strings.Split(tok, ".") {
			if strings.Contains(string(raw), part) {
				t.Fatal("the audit trail holds (part of) a raw token")
			}
		}
	}
}

func toJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
