package domain

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
)

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

// corpusMessages are the messages of the public corpus (bodies as they were posted).
func corpusMessages(t testing.TB) []string {
	t.Helper()
	data, err := os.ReadFile("testdata/dataverse-errors.json")
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Errors []struct {
			Message string          `json:"message"`
			Body    json.RawMessage `json:"body"`
		}
	}
	if err := json.Unmarshal(data, &file); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range file.Errors {
		out = append(out, e.Message+string(e.Body))
	}
	return out
}

// checkLiterals fails when an alternative of a rule matches a message that holds none of its
// literals (the alternatives together are the expression by construction: they are its
// top-level alternation's).
func checkLiterals(t testing.TB, msg string) {
	lower := strings.ToLower(msg)
	if !isASCII(msg) {
		return // the whole expression runs
	}
	for _, r := range byMessage {
		for _, b := range r.branches {
			if b.literals != nil && !containsAny(lower, b.literals) && b.re.MatchString(msg) {
				t.Fatalf("rule %q: %s matches %q, which holds none of its literals %q", r.name, b.re, msg, b.literals)
			}
		}
	}
}

// checkPrefilter fails when a rule's alternatives, skipped by their literals, do not answer as
// its whole expression does.
func checkPrefilter(t testing.TB, msg string) {
	lower, ascii := strings.ToLower(msg), isASCII(msg)
	for _, r := range byMessage {
		if whole, split := r.re.MatchString(msg), r.matches(msg, lower, ascii); whole != split {
			t.Fatalf("rule %q: its whole expression matches %q: %v; its alternatives, as their literals allow: %v", r.name, msg, whole, split)
		}
	}
}

// The literals that let a message skip a rule are derived from its expression: every rule has
// them, and a message any rule matches, in any case, is never skipped.
func TestMessageRulesSkipOnlyWhatTheyCannotMatch(t *testing.T) {
	for _, r := range byMessage {
		for _, b := range r.branches {
			if b.literals == nil {
				t.Errorf("rule %q: the alternative %s has no literal: it runs on every message", r.name, b.re)
			}
		}
	}
	// Under the race detector every alternative run on every message takes half a minute: a
	// sample then, the whole corpus without it (and FuzzMessagePrefilter beyond the corpus).
	stride := 1
	if raceEnabled {
		stride = 10
	}
	for i, m := range corpusMessages(t) {
		if i%stride == 0 {
			checkLiterals(t, m)
			checkLiterals(t, strings.ToUpper(m))
		}
	}
}

// FuzzMessagePrefilter: whatever the message, the rules answer as their whole expressions do.
func FuzzMessagePrefilter(f *testing.F) {
	for _, m := range corpusMessages(f) {
		f.Add(m)
	}
	f.Fuzz(func(t *testing.T, msg string) { checkPrefilter(t, msg) })
}
