package domain_test

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/dvsync/dvsync/domain"
	"github.com/dvsync/dvsync/infra/dataverse"
)

// corpusEntry is one public Dataverse error from testdata/dataverse-errors.json.
type corpusEntry struct {
	Source  string            `json:"source"`
	Class   domain.Class      `json:"class"`
	Kind    domain.Kind       `json:"kind"`
	Status  int               `json:"status"`
	Body    json.RawMessage   `json:"body"`
	Code    string            `json:"code"`
	Message string            `json:"message"`
	Details map[string]string `json:"details"`
}

func loadCorpus(t testing.TB) []corpusEntry {
	t.Helper()
	data, err := os.ReadFile("testdata/dataverse-errors.json")
	if err != nil {
		t.Fatal(err)
	}
	var file struct{ Errors []corpusEntry }
	if err := json.Unmarshal(data, &file); err != nil {
		t.Fatal(err)
	}
	return file.Errors
}

// asError turns an entry into the error the Dataverse client would return for it.
func (c corpusEntry) asError(t testing.TB) *domain.DataverseError {
	if c.Body != nil {
		dv, ok := dataverse.ParseErrorBody(c.Status, nil, c.Body)
		if !ok {
			t.Fatalf("%s: the body is not read as a Dataverse error", c.Source)
		}
		return dv
	}
	return &domain.DataverseError{Status: c.Status, Code: domain.NormalizeCode(c.Code), Message: c.Message}
}

// Every error people posted publicly, old and new forms, sorted as the person who fixes it needs.
func TestPublicErrorsAreClassified(t *testing.T) {
	entries := loadCorpus(t)
	if len(entries) < 60 {
		t.Fatalf("the corpus has %d entries; it must keep at least 60", len(entries))
	}
	c := domain.Classifier{IntegrationUser: "dvsync-integration"}
	for i, e := range entries {
		if !strings.HasPrefix(e.Source, "https://") {
			t.Errorf("entry %d has no source link", i)
		}
		f := c.Classify(e.asError(t))
		if f.Class != e.Class || f.Kind != e.Kind {
			t.Errorf("entry %d (%s): classified %s/%s, want %s/%s\n  message: %.160s", i, e.Source, f.Class, f.Kind, e.Class, e.Kind, f.Message)
			continue
		}
		for k, want := range e.Details {
			if got := f.Details[k]; (want == "*" && got == "") || (want != "*" && got != want) {
				t.Errorf("entry %d (%s): details[%s] = %q, want %q", i, e.Source, k, got, want)
			}
		}
		if f.Resolution == "" || f.Message == "" {
			t.Errorf("entry %d (%s): no message or resolution", i, e.Source)
		}
		if f.Kind == domain.KindMissingPrivilege && !strings.Contains(f.Resolution, "dvsync-integration") {
			t.Errorf("entry %d: the resolution does not name the integration user: %s", i, f.Resolution)
		}
	}
}
