package exchangeclient_test

import (
	"bufio"
	"bytes"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/spiffe-sts/spiffe-sts"

// forbiddenImports are packages that a client or a resource server must
// never link, with why; a path ending in "/..." forbids its subtree.
var forbiddenImports = []struct{ path, why string }{
	{module + "/exchange", "the token server; clients use exchange/protocol"},
	{module + "/issuer", "the token minter"},
	{module + "/issuer/...", "the token minter"},
	{"github.com/hashicorp/go-hclog", "imported packages return errors and do not log"},
	{"github.com/lestrrat-go/jwx/v2/...", "one JOSE stack: jwx v3"},
}

// TestImportGraph checks what the packages other teams import link: the
// client library and the resource-server verifier. It fails when their
// graph reaches the server, the issuer, hclog or jwx v2, or when a package
// other than go-spiffe's (whose jwtsvid needs it) imports go-jose.
func TestImportGraph(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to list the import graph: %v", err)
	}
	for _, root := range []string{
		module + "/exchange/exchangeclient",
		module + "/accesstoken",
		module + "/accesstoken/grpcauth",
		module + "/accesstoken/httpauth",
		module + "/accesstoken/extauthz",
		module + "/spiffeid/forwarded",
	} {
		t.Run(strings.TrimPrefix(root, module+"/"), func(t *testing.T) {
			cmd := exec.Command(goTool, "list", "-deps", "-f", "{{.ImportPath}}{{range .Imports}} {{.}}{{end}}", root)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("go list %s: %v\n%s", root, err, stderr.String())
			}
			graph := parseGraph(t, out)
			// One report per edge into a forbidden package from outside it,
			// naming the importer and how root reaches it.
			for _, pkg := range sortedKeys(graph) {
				for _, imp := range graph[pkg] {
					for _, f := range forbiddenImports {
						if matchPath(f.path, imp) && !matchPath(f.path, pkg) {
							t.Errorf("%s imports %s (%s); reached by %s", pkg, imp, f.why, strings.Join(importChain(graph, root, pkg), " -> "))
						}
					}
					if strings.HasPrefix(imp, "github.com/go-jose/go-jose") &&
						!strings.HasPrefix(pkg, "github.com/spiffe/go-spiffe/v2/") && !strings.HasPrefix(pkg, "github.com/go-jose/go-jose") {
						t.Errorf("%s imports %s (only go-spiffe may; we use jwx v3); reached by %s", pkg, imp, strings.Join(importChain(graph, root, pkg), " -> "))
					}
				}
			}
		})
	}
}

// parseGraph reads go list's "pkg import import..." lines.
func parseGraph(t *testing.T, out []byte) map[string][]string {
	t.Helper()
	graph := map[string][]string{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 0 {
			graph[fields[0]] = fields[1:]
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(graph) == 0 {
		t.Fatal("go list printed no packages")
	}
	return graph
}

func sortedKeys(m map[string][]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func matchPath(pattern, pkg string) bool {
	if prefix, ok := strings.CutSuffix(pattern, "/..."); ok {
		return strings.HasPrefix(pkg, prefix+"/")
	}
	return pkg == pattern
}

// importChain is a shortest import path from root to pkg, naming the
// culprit that pulls pkg in.
func importChain(graph map[string][]string, root, pkg string) []string {
	prev := map[string]string{root: ""}
	queue := []string{root}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		if cur == pkg {
			var chain []string
			for p := pkg; p != ""; p = prev[p] {
				chain = append([]string{p}, chain...)
			}
			return chain
		}
		for _, next := range graph[cur] {
			if _, seen := prev[next]; !seen {
				prev[next] = cur
				queue = append(queue, next)
			}
		}
	}
	return []string{root, "...", pkg}
}
