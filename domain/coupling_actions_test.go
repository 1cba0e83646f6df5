package domain

import (
	"strings"
	"testing"
)

// The advice of a record deleted on one side names the actions as the page and the CLI do.
func TestAdviceNamesTheCouplingActions(t *testing.T) {
	ev := ChangeEvent{Table: "customer", Key: "C 1"}
	dd := DestinationDeleted(ev, Mapping{Entity: "account"}, NamedRow{Entity: "account"}, nil).Resolution
	for _, want := range []string{"Restore", "Delete coupling", "dvsync couplings restore customer 'C 1'", "dvsync couplings delete-coupling customer 'C 1'"} {
		if !strings.Contains(dd, want) {
			t.Errorf("destination_deleted's advice %q does not name %q", dd, want)
		}
	}
	classified := Classifier{}.resolution(&Failure{Kind: KindDestinationDeleted, Details: map[string]string{}})
	if !strings.Contains(classified, ActionRestore.Button+" (") || !strings.Contains(classified, ActionDeleteCoupling.Button+" on") {
		t.Errorf("the classifier's destination_deleted advice %q does not name the actions", classified)
	}
	if sd := SourceDeleted(ev, Mapping{Entity: "account"}, NamedRow{Entity: "account"}).Resolution; !strings.Contains(sd, "Delete coupling") {
		t.Errorf("source_deleted's advice %q does not name Delete coupling", sd)
	}
}

func TestCLIQuotesWhatAShellWouldSplit(t *testing.T) {
	for in, want := range map[string]string{"C1": "C1", "a b": "'a b'", "it's": `'it'\''s'`, "$HOME": "'$HOME'", "": "''"} {
		if got := shellWord(in); got != want {
			t.Errorf("shellWord(%q) = %s, want %s", in, got, want)
		}
	}
}
