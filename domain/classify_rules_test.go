package domain

import "testing"

// Every message rule has a name of its own and sorts into a kind listed under its class, as the
// code table's rows do (TestEveryKindHasWordsAndItsClass).
func TestMessageRulesAreNamedAndListed(t *testing.T) {
	class := map[Kind]Class{}
	for _, e := range kindTable {
		class[e.kind] = e.class
	}
	seen := map[string]bool{}
	for _, r := range byMessage {
		if r.name == "" || seen[r.name] {
			t.Errorf("message rule %q is unnamed or named twice", r.name)
		}
		seen[r.name] = true
		if class[r.kind] != r.class {
			t.Errorf("rule %q sorts as %s/%s; the kind table lists %s under %s", r.name, r.class, r.kind, r.kind, class[r.kind])
		}
		if r.kind == KindUnknown {
			t.Errorf("rule %q sorts as unknown: that is the fallback's, when no rule knows an error", r.name)
		}
	}
}
