//go:build integration

package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe-sts/spiffe-sts/integration/harness"
)

const (
	frontendID = "spiffe://example.org/ns/shop/sa/frontend"
	ordersID   = "spiffe://example.org/ns/shop/sa/orders"
	paymentsID = "spiffe://example.org/ns/shop/sa/payments"
	reportsID  = "spiffe://example.org/ns/shop/sa/reports"
	supportID  = "spiffe://example.org/ns/ops/sa/support"
	thiefID    = "spiffe://example.org/ns/shop/sa/thief"
)

// TestDelegationChain runs frontend → orders → payments on real SPIRE with
// a real OIDC-style issuer for the end user: payments receives a token
// whose sub is the user and whose act chain lists orders then frontend,
// bound to orders' certificate. A thief with its own valid SVID cannot
// exchange or use the token at any hop. Depth limit, scope narrowing,
// may_act and impersonation are each shown allowed and refused.
func TestDelegationChain(t *testing.T) {
	t.Parallel()
	e := newEnv(t, envOptions{})
	ctx := t.Context()
	idp, err := harness.StartOIDCIssuer(ctx, bin.oidcIssuer, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = idp.Stop() })

	wl := map[string]string{}
	for name, id := range map[string]string{"frontend": frontendID, "orders": ordersID, "reports": reportsID, "support": supportID, "thief": thiefID} {
		wl[name] = e.workload(name, id)
	}
	policy := corpIssuerHCL(idp) + fmt.Sprintf(`
policy %q {
  audiences = [%q, %q]
  scopes    = ["orders.read", "orders.write"]
  delegation {
    issuers   = ["corp"]
    max_depth = 1
  }
}
policy %q {
  audiences = [%q]
  scopes    = ["orders.read", "orders.write"]
  delegation {
    issuers   = ["corp"]
    subjects  = [%q]
    max_depth = 2
  }
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
    issuers       = ["corp"]
    max_depth     = 1
    impersonation = true
  }
}
policy %q {
  audiences = [%q, %q]
  scopes    = ["orders.read", "orders.write"]
}
`, frontendID, ordersID, reportsID,
		ordersID, paymentsID, frontendID,
		reportsID, paymentsID,
		supportID, paymentsID,
		thiefID, ordersID, paymentsID)
	s := e.startSTS(0, "", policy)
	payments := e.startResourceServerAs(s, "payments", paymentsID, paymentsID)
	dir := t.TempDir()
	save := func(name, token string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(token), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	userToken := func(t *testing.T, mayAct string) string {
		tok, err := idp.IssueToken(ctx, "alice", []string{"spiffe-sts"}, "orders.read orders.write", mayAct, 5*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		return save("user-"+strings.ReplaceAll(mayAct, "/", "_"), tok)
	}
	// exchange runs stsctl exchange as a workload; it returns the token or
	// the error output and the exit code.
	exchange := func(t *testing.T, workload, subjectFile, subjectType, audience, scope string, extra ...string) (string, int) {
		return e.exchangeAs(t, s, wl[workload], subjectFile, subjectType, audience, scope, extra...)
	}
	mustExchange := func(t *testing.T, workload, subjectFile, subjectType, audience, scope string, extra ...string) string {
		t.Helper()
		out, code := exchange(t, workload, subjectFile, subjectType, audience, scope, extra...)
		if code != 0 {
			t.Fatalf("%s exchange: exit %d\n%s", workload, code, out)
		}
		return out
	}
	refused := func(t *testing.T, out string, code int, want string) {
		t.Helper()
		if code != 1 || !strings.Contains(out, want) {
			t.Fatalf("exit %d, want 1 with %q:\n%s", code, want, out)
		}
	}

	user := userToken(t, "")
	t1 := mustExchange(t, "frontend", user, "jwt", ordersID, "orders.read")
	t1File := save("t1", t1)
	t2 := mustExchange(t, "orders", t1File, "access_token", paymentsID, "orders.read orders.write")
	t2File := save("t2", t2)

	t.Run("payments accepts the token and sees the chain", func(t *testing.T) {
		out, code := runWorkload(t, wl["orders"], e.spire.WorkloadAPIAddr(), "call", "-url", payments.httpURL+"/orders", "-server-id", paymentsID, "-token-file", t2File)
		if code != 0 {
			t.Fatalf("exit %d\n%s", code, out)
		}
		for _, want := range []string{`"subject":"alice"`, `"act":["` + ordersID + `","` + frontendID + `"]`, `"client_id":"` + ordersID + `"`} {
			if !strings.Contains(out, want) {
				t.Errorf("payments' answer lacks %s:\n%s", want, out)
			}
		}
	})
	t.Run("scopes narrowed along the chain", func(t *testing.T) {
		out, _ := runWorkload(t, wl["orders"], e.spire.WorkloadAPIAddr(), "inspect", t2)
		if !strings.Contains(out, `"scope": "orders.read"`) || strings.Contains(out, "orders.write") {
			t.Fatalf("orders asked for orders.read orders.write over a token with orders.read:\n%s", out)
		}
	})
	t.Run("the thief cannot exchange the token at any hop", func(t *testing.T) {
		out, code := exchange(t, "thief", user, "jwt", paymentsID, "")
		refused(t, out, code, "invalid_request")
		out, code = exchange(t, "thief", t1File, "access_token", paymentsID, "")
		refused(t, out, code, "invalid_grant")
		out, code = exchange(t, "thief", t2File, "access_token", paymentsID, "")
		refused(t, out, code, "invalid_grant")
		if !strings.Contains(s.proc.Output(), "security_event=token_laundering") {
			t.Error("no security event logged for the laundering attempts")
		}
	})
	t.Run("the thief cannot use the token", func(t *testing.T) {
		out, code := runWorkload(t, wl["thief"], e.spire.WorkloadAPIAddr(), "call", "-url", payments.httpURL+"/orders", "-server-id", paymentsID, "-token-file", t2File)
		refused(t, out, code, "401")
	})
	t.Run("depth limit: allowed at 2, refused where policy allows 1", func(t *testing.T) {
		toReports := save("t1-reports", mustExchange(t, "frontend", user, "jwt", reportsID, ""))
		out, code := exchange(t, "reports", toReports, "access_token", paymentsID, "")
		refused(t, out, code, "the act chain would have 2 actors; policy allows 1")
	})
	t.Run("may_act: allowed for the named actor, refused for another", func(t *testing.T) {
		mustExchange(t, "frontend", userToken(t, frontendID), "jwt", ordersID, "")
		out, code := exchange(t, "frontend", userToken(t, ordersID), "jwt", ordersID, "")
		refused(t, out, code, "may_act does not allow this client")
	})
	t.Run("impersonation: allowed for support, refused for frontend", func(t *testing.T) {
		tok := mustExchange(t, "support", user, "jwt", paymentsID, "", "-impersonate")
		out, _ := runWorkload(t, wl["support"], e.spire.WorkloadAPIAddr(), "inspect", tok)
		if !strings.Contains(out, "act: none") || !strings.Contains(out, `"sub": "alice"`) {
			t.Fatalf("impersonation token:\n%s", out)
		}
		out, code := exchange(t, "frontend", user, "jwt", ordersID, "", "-impersonate")
		refused(t, out, code, "policy does not let this client impersonate")
	})
}

// corpIssuerHCL is the external_issuer block "corp" for the OIDC issuer
// idp, with audience spiffe-sts.
func corpIssuerHCL(idp *harness.OIDCIssuer) string {
	return fmt.Sprintf(`
external_issuer "corp" {
  issuer   = %q
  jwks_url = %q
  ca_file  = %q
  audience = "spiffe-sts"
}
`, idp.URL, idp.URL+"/jwks", idp.CAFile)
}

// exchangeAs runs stsctl exchange as the registered workload at path; it
// returns the token, or the error output, and the exit code.
func (e *env) exchangeAs(t *testing.T, s *sts, path, subjectFile, subjectType, audience, scope string, extra ...string) (string, int) {
	t.Helper()
	args := []string{"exchange", "-sts", s.url, "-sts-id", stsID, "-audience", audience,
		"-subject-token-file", subjectFile, "-subject-token-type", subjectType}
	if scope != "" {
		args = append(args, "-scope", scope)
	}
	out, code := runWorkload(t, path, e.spire.WorkloadAPIAddr(), append(args, extra...)...)
	return strings.TrimSpace(out), code
}
