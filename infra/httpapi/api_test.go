package httpapi

import (
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// The OpenAPI file describes exactly the routes the server registers.
func TestOpenAPIDescribesEveryRoute(t *testing.T) {
	var doc struct {
		Paths map[string]map[string]any `yaml:"paths"`
	}
	if err := yaml.Unmarshal(openAPI, &doc); err != nil {
		t.Fatal(err)
	}
	described := map[string]bool{}
	for path, ops := range doc.Paths {
		for method := range ops {
			described[strings.ToUpper(method)+" "+path] = true
		}
	}
	for _, r := range routes {
		if !described[r.method+" "+r.path] {
			t.Errorf("%s %s is served but not in openapi.yaml", r.method, r.path)
		}
		delete(described, r.method+" "+r.path)
	}
	for d := range described {
		t.Errorf("%s is in openapi.yaml but not served", d)
	}
}

func TestTokens(t *testing.T) {
	tok, err := ParseTokens("alice:operator:s3cret; bob:viewer:sha256=" + strings.Repeat("ab", 32) + "\n# comment")
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := tok.Lookup("s3cret"); !ok || p.Name != "alice" || p.Role != RoleOperator {
		t.Fatalf("alice = %+v %v", p, ok)
	}
	if _, ok := tok.Lookup("S3cret"); ok {
		t.Fatal("a wrong token was accepted")
	}
	for _, bad := range []string{"alice:admin:x", "alice:viewer", "bob:viewer:sha256=zz"} {
		if _, err := ParseTokens(bad); err == nil || strings.Contains(err.Error(), "x") && strings.Contains(bad, ":x") && strings.Contains(err.Error(), ":x") {
			t.Errorf("%q: err = %v", bad, err)
		}
	}
	if !RoleOperator.allows(RoleViewer) || RoleViewer.allows(RoleOperator) {
		t.Fatal("roles")
	}
}
