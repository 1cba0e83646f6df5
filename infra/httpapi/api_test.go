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
	for _, r := range allRoutes() {
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
	tok, err := ParseTokens("alice:operator:s3cret-0123456789abcdefghij; bob:viewer:sha256=" + strings.Repeat("ab", 32) + "\n# comment")
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := tok.Lookup("s3cret-0123456789abcdefghij"); !ok || p.Name != "alice" || p.Role != RoleOperator {
		t.Fatalf("alice = %+v %v", p, ok)
	}
	if _, ok := tok.Lookup("S3cret-0123456789abcdefghij"); ok {
		t.Fatal("a wrong token was accepted")
	}
	long := strings.Repeat("x", MinTokenLength)
	for bad, want := range map[string]string{
		"alice:admin:" + long:                      `alice: role "admin"`,
		"alice:viewer":                             "entry 1 is not name:role:token",
		"bob:viewer:sha256=zz":                     "bob: sha256= needs 64 hex digits",
		"carol:viewer:hunter2":                     "carol: the token is shorter than 24 characters",
		"dave:viewer:" + long[1:]:                  "dave: the token is shorter than 24",
		"ok:viewer:" + long + ";bare-secret-token": "entry 2 is not name:role:token",
	} {
		_, err := ParseTokens(bad)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err = %v, want %q", bad, err, want)
			continue
		}
		for _, secret := range []string{"hunter2", long[1:], "bare-secret-token"} {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("%q: the error shows the token: %v", bad, err)
			}
		}
	}
	if !RoleOperator.allows(RoleViewer) || RoleViewer.allows(RoleOperator) {
		t.Fatal("roles")
	}
}
