package domain

import (
	"go/ast"
	"go/parser"
	"go/token"
	"testing"
)

// Every Kind constant of failure.go is in the kind table once, in words, under the class the
// classifier gives it: a kind added without its words fails here.
func TestEveryKindHasWordsAndItsClass(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "failure.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var consts []Kind
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, spec := range g.Specs {
			vs := spec.(*ast.ValueSpec)
			if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != "Kind" {
				continue
			}
			for _, v := range vs.Values {
				lit := v.(*ast.BasicLit)
				consts = append(consts, Kind(lit.Value[1:len(lit.Value)-1]))
			}
		}
	}
	if len(consts) < 20 {
		t.Fatalf("found %d Kind constants in failure.go; the parse is wrong", len(consts))
	}
	seen := map[Kind]int{}
	for _, k := range Kinds() {
		seen[k]++
	}
	for _, k := range consts {
		if seen[k] != 1 {
			t.Errorf("kind %s is in the kind table %d times", k, seen[k])
		}
		if w := k.Words(); w == "" || w == string(k) {
			t.Errorf("kind %s has no words: %q", k, w)
		}
	}
	if len(Kinds()) != len(consts) {
		t.Errorf("the kind table has %d kinds, failure.go %d", len(Kinds()), len(consts))
	}
	for _, e := range kindTable {
		if e.class != ClassTransient && ClassOf(e.kind) != e.class {
			t.Errorf("kind %s is listed under %s; ClassOf says %s", e.kind, e.class, ClassOf(e.kind))
		}
	}
	class := map[Kind]Class{}
	for _, e := range kindTable {
		class[e.kind] = e.class
	}
	for code, r := range byCode {
		if class[r.kind] != r.class {
			t.Errorf("the classifier sorts %s as %s/%s; the kind table lists %s under %s", code, r.class, r.kind, r.kind, class[r.kind])
		}
	}
	if got := KindsOf(ClassCoupling); len(got) != len(userKinds) {
		t.Errorf("KindsOf(coupling) = %v; the user's kinds are %v", got, userKinds)
	}
	for _, k := range KindsOf("") {
		if k == KindThrottled {
			t.Error("KindsOf(\"\") lists a transient kind")
		}
	}
	if got := Kind("schema_from_the_future").Words(); got != "Schema from the future" {
		t.Errorf("an unknown kind in words: %q", got)
	}
}
